"""The Kivy widgets of the responder app; they read :class:`mobile.state.AppState` and call
:class:`mobile.responder.Responder`, nothing else."""
