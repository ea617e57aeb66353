"""Gunicorn settings for the back office (Docker image, docker-compose, scripts/check_deploy.sh).

Run with ``gunicorn --config gunicorn.conf.py run:app``. Every value can be changed from the
environment, so the same file serves every deployment.
"""

import multiprocessing
import os

# Where to listen. GUNICORN_BIND wins; otherwise all interfaces on $PORT (default 8000).
bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"

# Processes: WEB_CONCURRENCY, else the usual 2 x cores + 1, capped so a big host does not
# open dozens of database connections per container.
workers = int(os.environ.get("WEB_CONCURRENCY") or min(2 * multiprocessing.cpu_count() + 1, 9))
# A few threads per worker so one slow request (an upload) does not hold a whole worker.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS") or 2)

# Long CSV/Excel uploads and exports can take a while; nginx and friends should match this.
timeout = int(os.environ.get("GUNICORN_TIMEOUT") or 120)
graceful_timeout = 30
keepalive = 5
# Worker heartbeat files in memory: container overlay filesystems can stall them.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108

# Logs go to stdout/stderr for the container runtime to collect.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# Path only (%(U)s), never the query string (%(q)s, %(r)s) or the Referer (%(f)s): both can
# carry patient search terms. Fields: client, time, method, path, status, bytes, ms, agent.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'

# Proxies whose X-Forwarded-Proto is believed (so the app knows the request was https).
# Set to the reverse proxy's address, or "*" only when nothing else can reach this port.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# No runtime control socket (gunicornc) in a container: nothing uses it.
control_socket_disable = True
