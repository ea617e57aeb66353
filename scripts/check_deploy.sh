#!/usr/bin/env bash
# Checks the deployment files without Docker: runs the compose `web` service's own command
# (migrations, then gunicorn with gunicorn.conf.py) in a clean environment holding the variables
# docker-compose.yml and the Dockerfile set, against a fresh PostgreSQL database on 127.0.0.1
# and a throwaway redis-server (when installed), then probes it like the container health check
# and a browser would.
# Exits non-zero if any check fails. Usage: scripts/check_deploy.sh  (or `make check-deploy`);
# KEEP_LOG=FILE keeps the server log (migrations, gunicorn, access log) for a look afterwards.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

BIN=${BIN:-$ROOT/.venv/bin}
PG_HOST=127.0.0.1
PG_PORT=5432
DB_NAME=backoffice_deploy
PSQL=(env PGOPTIONS=--client-min-messages=warning psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qX)

passed=0
failed=0
skipped=0
ok() { passed=$((passed + 1)); echo "ok   - $*"; }
bad() { failed=$((failed + 1)); echo "FAIL - $*"; }
skip() { skipped=$((skipped + 1)); echo "skip - $*"; }
check() { # check DESCRIPTION COMMAND...
  local desc=$1
  shift
  if "$@"; then ok "$desc"; else bad "$desc"; fi
}

WORK=$(mktemp -d)
SERVER_PID=""
REDIS_PID=""
DB_CREATED=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  if [ -n "$REDIS_PID" ] && kill -0 "$REDIS_PID" 2>/dev/null; then
    kill -TERM "$REDIS_PID" 2>/dev/null
    wait "$REDIS_PID" 2>/dev/null
  fi
  if [ -n "$DB_CREATED" ]; then
    "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1
  fi
  if [ -n "${KEEP_LOG:-}" ] && [ -f "$WORK/server.log" ]; then cp "$WORK/server.log" "$KEEP_LOG"; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
finish() {
  echo "check-deploy: $passed passed, $failed failed, $skipped skipped"
  [ "$failed" -eq 0 ]
  exit
}
die() {
  bad "$*"
  if [ -s "$WORK/server.log" ]; then
    echo "---- server log (last 40 lines)"
    tail -n 40 "$WORK/server.log"
  fi
  finish
}

echo "== prerequisites"
for tool in python flask gunicorn pybabel; do
  [ -x "$BIN/$tool" ] || die "$BIN/$tool missing (run make install)"
done
command -v curl >/dev/null || die "curl missing"
pg_isready -h "$PG_HOST" -p "$PG_PORT" -q || die "PostgreSQL not answering on $PG_HOST:$PG_PORT"
ok "tools present, PostgreSQL answering on $PG_HOST:$PG_PORT"

echo "== static checks of the deployment files"
compose_web_cmd=$(sed -n 's/^ *command: \["sh", "-c", "\(.*\)"\]$/\1/p' docker-compose.yml)
[ -n "$compose_web_cmd" ] || die "could not read the web command from docker-compose.yml"
# The variables the compose file gives `web`: keys of its environment mapping.
compose_keys=$(awk '
  /^  web:/ { web = 1; next }
  /^  [^ ]/ { web = 0 }
  web && /^    environment:/ { env = 1; next }
  web && env && /^    [^ ]/ { env = 0 }
  web && env && /^      [A-Z_]+:/ { sub(/:.*/, ""); gsub(/ /, ""); print }
' docker-compose.yml | sort | xargs)
healthcheck_cmd=$(sed -n 's/^ *CMD \(python -c .*\) || exit 1$/\1/p' Dockerfile)
check "Dockerfile: python:3.11-slim base" grep -q '^FROM python:3.11-slim' Dockerfile
check "Dockerfile: runs as a non-root user" grep -q '^USER app' Dockerfile
check "Dockerfile: BACKOFFICE_ENV=production, EXPOSE 8000, gunicorn CMD" \
  sh -c 'grep -q "BACKOFFICE_ENV=production" Dockerfile && grep -q "^EXPOSE 8000" Dockerfile &&
         grep -q "^CMD \[\"gunicorn\", \"--config\", \"gunicorn.conf.py\", \"run:app\"\]" Dockerfile'
check "Dockerfile: health check command found" test -n "$healthcheck_cmd"
check "gunicorn.conf.py: access log format has no query string or referer" \
  "$BIN/python" -c '
import runpy, sys
fmt = runpy.run_path("gunicorn.conf.py")["access_log_format"]
sys.exit(any(a in fmt for a in ("%(q)s", "%(r)s", "%(f)s", "{raw_uri}")) or "%(U)s" not in fmt)'
check "gunicorn.conf.py: gunicorn accepts the configuration" \
  sh -c 'GUNICORN_BIND=127.0.0.1:0 "$1/gunicorn" --config gunicorn.conf.py --check-config run:app \
         >"$2/check-config.log" 2>&1 || { tail -n 5 "$2/check-config.log"; exit 1; }' _ "$BIN" "$WORK"

# Compose file: parse it and check its shape when PyYAML is at hand (never a project dependency).
if python3 -c 'import yaml' 2>/dev/null; then
  check "docker-compose.yml: parses; db and redis healthy before web; named volume; SECRET_KEY required" \
    python3 - <<'PY'
import sys, yaml
c = yaml.safe_load(open("docker-compose.yml"))
db, web = c["services"]["db"], c["services"]["web"]
problems = []
if not str(db["image"]).startswith("postgres:16"): problems.append("db image")
if "pg_isready" not in " ".join(db["healthcheck"]["test"]): problems.append("db healthcheck")
vol = db["volumes"][0].split(":")[0]
if vol not in (c.get("volumes") or {}): problems.append("named volume")
for dep in ("db", "redis"):
    if web["depends_on"][dep]["condition"] != "service_healthy": problems.append("depends_on " + dep)
if "redis-cli" not in " ".join(c["services"]["redis"]["healthcheck"]["test"]): problems.append("redis healthcheck")
if not web["environment"]["RATELIMIT_STORAGE_URI"].startswith("redis://redis:6379"): problems.append("RATELIMIT_STORAGE_URI")
if "${SECRET_KEY:?" not in web["environment"]["SECRET_KEY"]: problems.append("SECRET_KEY")
if "@db:5432/" not in web["environment"]["DATABASE_URL"]: problems.append("DATABASE_URL")
if web["environment"]["BACKOFFICE_ENV"] != "production": problems.append("BACKOFFICE_ENV")
if "TRUSTED_PROXY_COUNT" not in web["environment"]: problems.append("TRUSTED_PROXY_COUNT")
if "8000:8000" not in web["ports"]: problems.append("port")
print("  problems: " + ", ".join(problems)) if problems else None
sys.exit(bool(problems))
PY
else
  skip "docker-compose.yml shape (no PyYAML for python3)"
fi
if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
  check "docker compose config accepts the file" \
    env SECRET_KEY=x docker compose -f docker-compose.yml config -q
  check "docker compose refuses to start without SECRET_KEY" \
    sh -c '! env -u SECRET_KEY docker compose -f docker-compose.yml config -q 2>/dev/null'
else
  skip "docker compose config (no compose CLI here)"
fi

# Translations: the Dockerfile's guarded compile, tried on a copy.
mkdir -p "$WORK/translations"
cp -r backoffice/translations/. "$WORK/translations/" 2>/dev/null
if ls "$WORK"/translations/*/LC_MESSAGES/*.po >/dev/null 2>&1; then
  check "translations compile (pybabel compile -f)" \
    "$BIN/pybabel" compile -f -d "$WORK/translations" -D "messages admin"
else
  ok "no .po files yet: the Dockerfile's guarded pybabel compile is skipped"
fi

echo "== fresh database $DB_NAME"
"${PSQL[@]}" -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null || die "drop $DB_NAME"
"${PSQL[@]}" -c "CREATE DATABASE $DB_NAME" >/dev/null || die "create $DB_NAME"
DB_CREATED=1
ok "created $DB_NAME"

free_port() { "$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

echo "== redis for the login rate limit"
RATELIMIT_URI=""
if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
  REDIS_PORT=$(free_port)
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 1 20); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.25
  done
  if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    RATELIMIT_URI="redis://127.0.0.1:$REDIS_PORT/0"
    ok "throwaway redis-server on 127.0.0.1:$REDIS_PORT"
  else
    die "redis-server did not start"
  fi
else
  RATELIMIT_URI="memory://"
  skip "no redis-server here: rate limit storage falls back to memory://"
fi

# The container's environment: Dockerfile ENV + compose `web` environment, nothing else from
# this shell. DATABASE_URL and RATELIMIT_STORAGE_URI point at 127.0.0.1 instead of services.
PORT=$(free_port)
SECRET=$("$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(48))')
COMPOSE_ENV=(
  "BACKOFFICE_ENV=production"
  "DATABASE_URL=postgresql://postgres@$PG_HOST:$PG_PORT/$DB_NAME"
  "SECRET_KEY=$SECRET"
  "SESSION_COOKIE_SECURE=true"
  "FORWARDED_ALLOW_IPS=127.0.0.1,::1"
  "RATELIMIT_STORAGE_URI=$RATELIMIT_URI"
  "RQ_REDIS_URL=${RATELIMIT_URI/%\/0/\/1}"
  "IMPORT_UPLOAD_DIR=$WORK/imports"
  "LOG_LEVEL=INFO"
)
IMAGE_ENV=(
  "PATH=$BIN:/usr/local/bin:/usr/bin:/bin"
  "HOME=$WORK"
  "LANG=C.UTF-8"
  "PYTHONDONTWRITEBYTECODE=1"
  "PYTHONUNBUFFERED=1"
  "FLASK_APP=run"
  "PORT=$PORT"
  "GUNICORN_BIND=127.0.0.1:$PORT"
)
in_container() { env -i "${IMAGE_ENV[@]}" "${COMPOSE_ENV[@]}" "$@"; }
script_keys=$(printf '%s\n' "${COMPOSE_ENV[@]}" | sed 's/=.*//' | sort | xargs)
if [ "$script_keys" = "$compose_keys" ]; then
  ok "same variables as compose's web service: $compose_keys"
else
  bad "variables differ: compose web has [$compose_keys], this script sets [$script_keys]"
fi

echo "== compose web command on 127.0.0.1:$PORT: $compose_web_cmd"
# Started directly (not through a function) so $! is the process that becomes gunicorn's master.
env -i "${IMAGE_ENV[@]}" "${COMPOSE_ENV[@]}" sh -c "$compose_web_cmd" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
up=""
for _ in $(seq 1 60); do
  kill -0 "$SERVER_PID" 2>/dev/null || die "web command exited early (migration or gunicorn failed)"
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz")
  if [ "$code" = "200" ]; then up=1; break; fi
  sleep 0.5
done
[ -n "$up" ] || die "/healthz did not answer 200 within 30 s"
ok "migrations applied and gunicorn serving: /healthz 200"

current=$(in_container flask --app run db current 2>/dev/null)
check "database at the migration head ($(echo "$current" | tail -n 1))" grep -q "(head)" <<<"$current"
check "gunicorn uses gthread workers" grep -q "Using worker: gthread" "$WORK/server.log"
check "/healthz body says ok" \
  sh -c "curl -s http://127.0.0.1:$PORT/healthz | grep -q '\"status\": *\"ok\"'"
check "Dockerfile HEALTHCHECK command succeeds" in_container sh -c "$healthcheck_cmd"

echo "== /login as a browser sees it"
login_code=$(curl -s -D "$WORK/login.h" -o "$WORK/login.html" -w '%{http_code}' \
  -H 'Referer: http://example.test/admin/patient/?search=REFERERSECRET' \
  "http://127.0.0.1:$PORT/login?next=/admin/&search=QUERYSECRET")
check "/login answers 200" test "$login_code" = "200"
hdr() { grep -qi "$1" "$WORK/login.h"; }
check "CSRF token field in the login form" grep -q 'name="csrf_token"' "$WORK/login.html"
check "password field autocomplete=current-password" \
  grep -q 'autocomplete="current-password"' "$WORK/login.html"
check "session cookie is __Host- prefixed, Secure, HttpOnly, SameSite=Lax" \
  sh -c "grep -i '^set-cookie: __Host-session=' '$WORK/login.h' | grep -i 'secure' | grep -i 'httponly' | grep -qi 'samesite=lax'"
check "Content-Security-Policy (default-src 'self', frame-ancestors 'none')" \
  sh -c "grep -i '^content-security-policy:' '$WORK/login.h' | grep \"default-src 'self'\" | grep -q \"frame-ancestors 'none'\""
check "X-Frame-Options: DENY" hdr '^x-frame-options: DENY'
check "X-Content-Type-Options: nosniff" hdr '^x-content-type-options: nosniff'
check "Cache-Control: no-store" hdr '^cache-control: no-store'
check "Referrer-Policy: same-origin" hdr '^referrer-policy: same-origin'
check "Strict-Transport-Security sent" hdr '^strict-transport-security: max-age='
check "no Server version banner beyond gunicorn's name" \
  sh -c "! grep -Eqi '^server: .*[0-9]+\.[0-9]+' '$WORK/login.h'"
admin_loc=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "http://127.0.0.1:$PORT/admin/")
check "anonymous /admin/ is sent to the login page ($admin_loc)" \
  grep -Eq '^302 .*/login' <<<"$admin_loc"

echo "== a failed login POST (CSRF token + cookie from the page)"
cookie=$(sed -n 's/^[Ss]et-[Cc]ookie: \(__Host-session=[^;]*\);.*/\1/p' "$WORK/login.h" | head -n 1)
token=$(grep -o 'id="csrf_token"[^>]*' "$WORK/login.html" | sed -n 's/.*value="\([^"]*\)".*/\1/p' | head -n 1)
post_code=$(curl -s -o "$WORK/post.html" -w '%{http_code}' -H "Cookie: $cookie" \
  --data-urlencode "csrf_token=$token" --data-urlencode "next=/admin/" \
  --data-urlencode "email=nobody.deploycheck@example.test" \
  --data-urlencode "password=WRONGPASSWORDSECRET" "http://127.0.0.1:$PORT/login")
check "POST /login with a wrong password: 200 with the form again, not a CSRF error ($post_code)" \
  sh -c "test '$post_code' = 200 && grep -q 'id=\"login-form\"' '$WORK/post.html'"
nocsrf_code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" \
  --data-urlencode "email=nobody.deploycheck@example.test" \
  --data-urlencode "password=WRONGPASSWORDSECRET" "http://127.0.0.1:$PORT/login")
check "POST /login without the CSRF token is refused ($nocsrf_code)" test "$nocsrf_code" = 400
if [ -n "$REDIS_PID" ]; then
  keys=$(redis-cli -p "$REDIS_PORT" dbsize 2>/dev/null)
  check "login rate limit counted in redis ($keys keys)" test "${keys:-0}" -gt 0
fi

echo "== production refuses unsafe settings"
weak_out=$(in_container env SECRET_KEY=short python -c \
  'from backoffice import create_app; create_app("production")' 2>&1)
weak_rc=$?
check "weak SECRET_KEY: non-zero exit ($weak_rc)" test "$weak_rc" -ne 0
check "weak SECRET_KEY: says why" \
  grep -q "SECRET_KEY must be set to a random value of at least 32 characters" <<<"$weak_out"
nodb_out=$(in_container env -u DATABASE_URL python -c \
  'from backoffice import create_app; create_app("production")' 2>&1)
nodb_rc=$?
check "missing DATABASE_URL: refused" \
  sh -c "test $nodb_rc -ne 0 && grep -q 'DATABASE_URL must be set' <<'EOF'
$nodb_out
EOF"

echo "== stop gunicorn"
kill -TERM "$SERVER_PID"
stopped=""
stop_secs=0
for _ in $(seq 1 20); do  # docker stop allows 10 s before SIGKILL
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then stopped=1; break; fi
  sleep 0.5
  stop_secs=$((stop_secs + 1))
done
stop_secs=$((stop_secs / 2))
wait "$SERVER_PID" 2>/dev/null
SERVER_PID=""
check "gunicorn stopped on SIGTERM (${stop_secs}s)" test -n "$stopped"
check "port $PORT closed after the stop" \
  sh -c "! curl -s -o /dev/null --max-time 2 http://127.0.0.1:$PORT/healthz"
check "access log lines written to stdout" grep -q '"GET /login HTTP/1.1" 200' "$WORK/server.log"
check "access log holds no query string or referer (no patient search terms)" \
  sh -c "! grep -Eq 'QUERYSECRET|REFERERSECRET|next=' '$WORK/server.log'"
check "server log holds neither the login email nor the password tried" \
  sh -c "! grep -Eq 'nobody.deploycheck|WRONGPASSWORDSECRET' '$WORK/server.log'"
check "no traceback in the server log" sh -c "! grep -q 'Traceback' '$WORK/server.log'"

echo "== drop $DB_NAME"
if "${PSQL[@]}" -c "DROP DATABASE $DB_NAME WITH (FORCE)" >/dev/null; then
  DB_CREATED=""
  ok "dropped $DB_NAME"
else
  bad "drop $DB_NAME"
fi

finish
