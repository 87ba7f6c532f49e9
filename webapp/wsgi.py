"""WSGI entry point of the REST API, served by gunicorn gthread (webapp/servers.py).

The API holds no WebSocket: Socket.IO is its own process (webapp/socket_service.py,
docs/decisions/0001-socketio-server-mode.md), so any number of worker processes is fine.
"""

from webapp import create_app

app = create_app()
