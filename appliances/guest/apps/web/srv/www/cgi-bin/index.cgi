#!/bin/sh
# GET /: the VM's name, the appliance and version and, with drover.db=HOST:PORT,
# the value of drover.dbkey (default `greeting`) read from the db at request time.
. /run/drover/env

html() {
  printf '%s' "$1" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g' -e "s/'/\&#39;/g"
}

key=${DROVER_DBKEY:-greeting}
db_status=unconfigured
db_value=
if [ -n "$DROVER_DB" ]; then
  host=${DROVER_DB%:*}
  port=${DROVER_DB##*:}
  reply=$(printf 'GET %s\nQUIT\n' "$key" | timeout 3 nc "$host" "$port" 2>/dev/null | head -n 1 | tr -d '\r')
  case "$reply" in
    "VALUE "*) db_status=ok; db_value=${reply#VALUE } ;;
    NOTFOUND) db_status=notfound ;;
    ERR*) db_status=error ;;
    *) db_status=unreachable ;;
  esac
fi

printf 'Content-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\n\r\n'
cat <<HTML
<!doctype html>
<html>
<head><meta charset="utf-8"><title>$(html "$DROVER_NAME") - $DROVER_APPLIANCE $DROVER_VERSION</title></head>
<body>
<h1 id="name">$(html "$DROVER_NAME")</h1>
<p>appliance <span id="appliance">$DROVER_APPLIANCE</span> version <span id="version">$DROVER_VERSION</span> on host <span id="hostname">$(html "$(hostname)")</span></p>
<p>database <span id="db">$(html "${DROVER_DB:-none}")</span> key <span id="dbkey">$(html "$key")</span> status <span id="db-status">$db_status</span></p>
<p>value <span id="db-value">$(html "$db_value")</span></p>
</body>
</html>
HTML
