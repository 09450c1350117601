#!/usr/bin/env bash
# Installs whatever Drover needs on a Debian 12 machine and builds it.
# Idempotent and quiet when nothing is missing; run by ./drover and ./run-tests.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }

# Debian packages the product and its tests drive for real.
DEBIAN_PACKAGES=(
  qemu-system-x86 qemu-utils qemu-block-extra   # hypervisor, qemu-img, iSCSI/NBD block drivers
  linux-image-cloud-amd64 busybox-static        # guest kernel and userland for the appliances
  e2fsprogs cpio gcc libc6-dev                  # mke2fs -d, initramfs checks, the static counter binary
  util-linux procps iproute2                    # prlimit, setsid, ps, ip netns
  openssl ca-certificates                       # the cluster CA (certificates, CSRs, CRLs)
  postgresql                                    # the store's second backend (conformance tests)
  python3 make g++                              # better-sqlite3 compiles from source with node-gyp
  genisoimage                                   # cloud-init NoCloud seeds (ISO 9660, label cidata)
  isolinux syslinux-common syslinux-utils       # the bootable hybrid test ISO (isolinux.bin, ldlinux.c32, isohybrid)
  chromium fonts-dejavu-core                    # the web console's browser tests (playwright-core drives it)
  nftables dnsmasq-base bridge-utils            # VM networks: firewall tables, DHCP per network
  slapd ldap-utils                              # LDAP users (the tests start their own slapd)
  openipmi ipmitool                             # IPMI power driver (tests run ipmi_sim)
  tgt                                           # iSCSI shared storage (tests run their own tgtd)
)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    log "missing Debian packages: ${missing[*]} (run as root to install them)"
    exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Drover and its tests run their own slapd and tgtd on other ports: keep Debian from
  # starting the system services while it installs them (a policy-rc.d that says no).
  made_policy=
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [[ -n "$made_policy" ]]; then rm -f /usr/sbin/policy-rc.d; fi
fi

if ! command -v node >/dev/null || [[ $(node -p 'process.versions.node.split(".")[0]') -lt 20 ]]; then
  log "Node.js 20 or newer is required"
  exit 1
fi

# npm dependencies: reinstall only when the lockfile changed since the last install.
stamp=node_modules/.drover-lock-stamp
if [[ ! -f "$stamp" ]] || ! cmp -s package-lock.json "$stamp"; then
  log "installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  cp package-lock.json "$stamp"
fi

log "building (tsc -b)"
npx tsc -b
# The web console: Vite bundles it; rebuilt only when a source is newer than the bundle.
web_index=packages/web/dist/index.html
if [[ ! -f "$web_index" ]] || [[ -n "$(find packages/web/src packages/web/test packages/web/index.html packages/web/package.json packages/web/vite.config.ts packages/web/tsconfig.json packages/api/src -newer "$web_index" -print -quit)" ]]; then
  log "building the web console (packages/web/dist)"
  npm run build -w packages/web --silent
fi
