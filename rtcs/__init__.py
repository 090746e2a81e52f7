"""rtcs: a real-time communication service on Thespian actors and websockets."""

__version__ = "0.1.0"
