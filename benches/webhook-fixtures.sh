# Sourced by scripts/bench-webhook.sh and scripts/profile-webhook.sh (run from the repo root).
#
# webhook_fixtures DIR KEY: writes DIR/good.json and DIR/bad.json (the host's envelope of a
# signed ~1 KB delivery, and of one with a wrong HMAC), DIR/sizes (their sizes, in words) and
# DIR/bridge.toml (the delivery's survey, raising ServiceNow tickets).
webhook_fixtures() {
  node benches/make-envelope.js "$2" "$1" 2>"$1/sizes"
  cat > "$1/bridge.toml" <<TOML
[[surveys]]
id = "SV_22VlHYNeldrrrkp"
[surveys.tickets]
system = "servicenow"
TOML
}

# free_port: a loopback port nobody listens on right now.
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
