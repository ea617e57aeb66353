# Production image of the clinic back office: gunicorn serving run:app as a non-root user.
# Build: docker build -t backoffice .   Run: see docker-compose.yml (PostgreSQL + migrations).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user owns nothing but the instance folder it may write to.
RUN groupadd --system app && useradd --system --gid app --home-dir /app --no-create-home app

WORKDIR /app

# Dependencies first, so code changes do not reinstall them (all pinned, all binary wheels).
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .

# Compile translations when there are any (.mo files are build products, not in git).
RUN if ls backoffice/translations/*/LC_MESSAGES/*.po >/dev/null 2>&1; then \
        pybabel compile -f -d backoffice/translations -D "messages admin"; \
    fi \
    && mkdir -p /app/instance \
    && chown app:app /app/instance

ENV BACKOFFICE_ENV=production \
    FLASK_APP=run \
    PORT=8000

USER app

EXPOSE 8000

# slim has no curl: ask /healthz (app + database) with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)" || exit 1

CMD ["gunicorn", "--config", "gunicorn.conf.py", "run:app"]
