"""WSGI entry point: `gunicorn -k gthread -w 1 --threads 50 webapp.wsgi:app`.

Socket.IO runs in threading mode with simple-websocket (docs/decisions/0001-*.md):
one process with many threads, so no sticky sessions are needed.
"""

from webapp import create_app

app = create_app()
