"""The web console's static files (``static/``), served at ``/`` by ``app/routes/console.py``."""
