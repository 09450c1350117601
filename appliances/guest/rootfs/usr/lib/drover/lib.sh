# Shared shell functions of the appliance boot (sourced by rcS).
# Settings come from the kernel command line (`drover.KEY=VALUE`) and then from an
# optional config disk, whose values win. They end up as DROVER_KEY='VALUE' lines
# in /run/drover/env, which every script and CGI sources.

DROVER_ENV=/run/drover/env

drover_fail() {
  echo "DROVER-FAILED appliance=$DROVER_APPLIANCE name=$DROVER_NAME reason=$*"
  exit 1
}

# _drover_set KEY VALUE ORIGIN: validate, then append to $DROVER_ENV.
# Values are limited to a shell- and HTML-safe set, so quoting them is trivial.
_drover_set() {
  case "$1" in
    ''|*[!a-z0-9_]*) echo "DROVER-WARN ignoring setting '$1' from $3: keys are [a-z0-9_]"; return 0 ;;
    appliance|version) echo "DROVER-WARN ignoring setting '$1' from $3: it is fixed by the image"; return 0 ;;
  esac
  case "$2" in
    *[!A-Za-z0-9_.:/@,+-]*) echo "DROVER-WARN ignoring drover.$1 from $3: value has characters outside [A-Za-z0-9_.:/@,+-]"; return 0 ;;
  esac
  echo "DROVER_$(echo "$1" | tr a-z A-Z)='$2'" >> "$DROVER_ENV"
}

# _drover_read_config ORIGIN < text: KEY=VALUE lines (KEY with or without `drover.`).
_drover_read_config() {
  while IFS= read -r line || [ -n "$line" ]; do
    line=$(printf '%s' "$line" | tr -d '\r\000')
    case "$line" in ''|'#'*) continue ;; *=*) ;; *) continue ;; esac
    key=${line%%=*}
    key=${key#drover.}
    _drover_set "$key" "${line#*=}" "$1"
  done
}

# A config disk is either a filesystem labelled drover-cfg holding /drover.conf,
# or a raw disk whose content starts with the line `#drover-cfg` (plain text).
_drover_config_disk() {
  dev=$(findfs LABEL=drover-cfg 2>/dev/null)
  if [ -n "$dev" ] && [ -b "$dev" ]; then
    mkdir -p /run/drover/cfg
    if mount -o ro "$dev" /run/drover/cfg 2>/dev/null; then
      if [ -f /run/drover/cfg/drover.conf ]; then
        head -c 65536 /run/drover/cfg/drover.conf | _drover_read_config "$dev"
        echo "DROVER-INFO config disk $dev (drover.conf) applied"
      else
        echo "DROVER-WARN config disk $dev has no /drover.conf"
      fi
      umount /run/drover/cfg
      return 0
    fi
  fi
  for dev in /dev/vd[b-z]; do
    [ -b "$dev" ] || continue
    if [ "$(head -c 11 "$dev" 2>/dev/null)" = "#drover-cfg" ]; then
      head -c 65536 "$dev" | tr -d '\000' | _drover_read_config "$dev"
      echo "DROVER-INFO config disk $dev (text) applied"
      return 0
    fi
  done
}

load_settings() {
  mkdir -p /run/drover
  : > "$DROVER_ENV"
  set -f
  for arg in $(cat /proc/cmdline); do
    case "$arg" in
      drover.*=*) kv=${arg#drover.}; _drover_set "${kv%%=*}" "${kv#*=}" "the kernel command line" ;;
    esac
  done
  set +f
  _drover_config_disk
  cat /etc/drover/appliance >> "$DROVER_ENV"
  . "$DROVER_ENV"
  if [ -z "$DROVER_NAME" ]; then
    DROVER_NAME=$DROVER_APPLIANCE
    echo "DROVER_NAME='$DROVER_NAME'" >> "$DROVER_ENV"
  fi
  if [ -z "$DROVER_HOSTNAME" ]; then
    DROVER_HOSTNAME=$(echo "$DROVER_NAME" | tr -c 'A-Za-z0-9.\n-' '-' | cut -c1-63)
    echo "DROVER_HOSTNAME='$DROVER_HOSTNAME'" >> "$DROVER_ENV"
  fi
}

setup_hostname() {
  hostname "$DROVER_HOSTNAME"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$DROVER_HOSTNAME" > /run/hosts
}

setup_network() {
  ip link set lo up
  tries=0
  while [ ! -e /sys/class/net/eth0 ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 50 ]; then
      echo "DROVER-WARN no eth0: running without network"
      return 0
    fi
    sleep 0.1
  done
  ip link set eth0 up || return 1
  : > /run/resolv.conf
  if [ -n "$DROVER_IP" ]; then
    case "$DROVER_IP" in */*) cidr=$DROVER_IP ;; *) cidr=$DROVER_IP/24; echo "DROVER-WARN drover.ip has no prefix length, using $cidr" ;; esac
    ip addr add "$cidr" dev eth0 || return 1
    if [ -n "$DROVER_GW" ]; then ip route add default via "$DROVER_GW" dev eth0 || return 1; fi
    echo "DROVER-INFO eth0 static $cidr gw ${DROVER_GW:-none}"
  elif [ "$DROVER_NET" = user ]; then
    # QEMU user networking (slirp) always hands out these.
    ip addr add 10.0.2.15/24 dev eth0 || return 1
    ip route add default via "${DROVER_GW:-10.0.2.2}" dev eth0 || return 1
    echo "nameserver 10.0.2.3" > /run/resolv.conf
    echo "DROVER-INFO eth0 user-net 10.0.2.15/24 gw ${DROVER_GW:-10.0.2.2}"
  else
    # DHCP: wait up to ~5 s for a lease, then keep trying in the background.
    udhcpc -i eth0 -s /etc/udhcpc/default.script -t 5 -T 1 -A 5 -b -p /run/udhcpc.pid \
      -x "hostname:$DROVER_HOSTNAME" >/dev/null 2>&1 || return 1
    lease=$(cat /run/drover/dhcp-eth0 2>/dev/null)
    if [ -n "$lease" ]; then
      echo "DROVER-INFO eth0 dhcp $lease"
    else
      echo "DROVER-WARN eth0: no DHCP lease yet, still trying in the background"
    fi
  fi
  if [ -n "$DROVER_DNS" ]; then
    echo "nameserver $DROVER_DNS" > /run/resolv.conf
  fi
  return 0
}

# cloud-init NoCloud, the small part of it an appliance needs: an ISO 9660
# filesystem labelled cidata holding meta-data and user-data. Its
# local-hostname names the guest (it wins over drover.hostname); user-data that
# starts with `#!` runs once per instance-id, its output on the console.
NOCLOUD_DIR=/run/drover/nocloud

# _nocloud_value KEY < meta-data: the value of a top-level `KEY: value` line, unquoted.
_nocloud_value() {
  sed -n "s/^$1:[[:space:]]*//p" | head -n 1 | tr -d '\r' | sed "s/^[\"']//; s/[\"'][[:space:]]*\$//; s/[[:space:]]*\$//"
}

nocloud_seed() {
  dev=$(findfs LABEL=cidata 2>/dev/null || findfs LABEL=CIDATA 2>/dev/null)
  [ -n "$dev" ] && [ -b "$dev" ] || return 0
  mkdir -p "$NOCLOUD_DIR/mnt"
  if ! mount -o ro -t iso9660 "$dev" "$NOCLOUD_DIR/mnt" 2>/dev/null; then
    echo "DROVER-WARN cloud-init seed $dev cannot be mounted as iso9660"
    return 0
  fi
  for f in meta-data user-data network-config; do
    [ -f "$NOCLOUD_DIR/mnt/$f" ] && cp "$NOCLOUD_DIR/mnt/$f" "$NOCLOUD_DIR/$f"
  done
  umount "$NOCLOUD_DIR/mnt"
  NOCLOUD_INSTANCE=$(_nocloud_value instance-id < "$NOCLOUD_DIR/meta-data" 2>/dev/null)
  local_hostname=$(_nocloud_value local-hostname < "$NOCLOUD_DIR/meta-data" 2>/dev/null)
  case "$local_hostname" in
    '') ;;
    *[!A-Za-z0-9.-]*) echo "DROVER-WARN cloud-init local-hostname '$local_hostname' ignored: use letters, digits, '.' and '-'" ;;
    *)
      DROVER_HOSTNAME=$(echo "$local_hostname" | cut -c1-63)
      echo "DROVER_HOSTNAME='$DROVER_HOSTNAME'" >> "$DROVER_ENV"
      ;;
  esac
  echo "DROVER-INFO cloud-init seed $dev instance=${NOCLOUD_INSTANCE:-none} hostname=${local_hostname:-unchanged}"
}

nocloud_user_data() {
  script=$NOCLOUD_DIR/user-data
  [ -s "$script" ] || return 0
  case "$(head -c 2 "$script")" in
    '#!') ;;
    *)
      echo "DROVER-WARN cloud-init user-data ignored: only scripts starting with #! run here ($(head -n 1 "$script" | cut -c1-40))"
      return 0
      ;;
  esac
  instance=${NOCLOUD_INSTANCE:-none}
  done_file=/var/lib/drover/cloud-init-instance
  if [ "$(cat "$done_file" 2>/dev/null)" = "$instance" ]; then
    echo "DROVER-INFO cloud-init user-data already ran for instance $instance"
    return 0
  fi
  chmod 0700 "$script"
  echo "DROVER-CLOUD-INIT user-data start instance=$instance"
  (cd / && "$script" < /dev/null 2>&1)
  rc=$?
  mkdir -p /var/lib/drover
  echo "$instance" > "$done_file" && sync
  echo "DROVER-CLOUD-INIT user-data done instance=$instance rc=$rc"
}
