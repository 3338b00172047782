"""The Kivy widgets of the responder app; they read :class:`mobile.state.AppState` and call
:class:`mobile.responder.Responder`, nothing else. On a desktop the window is phone-shaped."""

from kivy.config import Config

Config.set("graphics", "width", "540")
Config.set("graphics", "height", "960")
Config.set("input", "mouse", "mouse,disable_multitouch")  # a right click is not a second finger
Config.set("kivy", "kivy_clock", "interrupt")  # a wake-up ends a dozing frame's sleep (mobile/ui/doze.py)
