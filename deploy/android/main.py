"""The Android entry point: the app on the node directory in the app's private storage, enrolled by
scanning an invitation (the enrolment screen shows until then)."""

import asyncio
import os
from pathlib import Path

os.environ.setdefault("KIVY_NO_ARGS", "1")

from mobile.runtime import run
from mobile.settings import AppSettings

node_dir = Path(os.environ.get("ANDROID_PRIVATE", str(Path.home()))) / "mesh112"
node_dir.mkdir(parents=True, exist_ok=True)
asyncio.run(run(node_dir, AppSettings.load(node_dir)))
