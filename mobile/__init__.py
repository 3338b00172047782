"""The responder's Kivy app: an embedded Mesh112 node that works offline and queues what it
cannot send."""
