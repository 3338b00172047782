"""python-for-android recipe: nng (the C library pynng wraps), cross-compiled with CMake as a static
library for each Android architecture. Not built here (no Android NDK on the build machine)."""

import os
from typing import ClassVar

import sh
from pythonforandroid.logger import shprint
from pythonforandroid.recipe import Recipe
from pythonforandroid.util import current_directory, ensure_dir


class NngRecipe(Recipe):
    version = "1.9.0"  # the nng release pynng 0.8 builds against
    url = "https://github.com/nanomsg/nng/archive/refs/tags/v{version}.tar.gz"
    built_libraries: ClassVar[dict[str, str]] = {"libnng.a": "build"}
    need_stl_shared = False

    def build_arch(self, arch):
        source = self.get_build_dir(arch.arch)
        build = os.path.join(source, "build")
        ensure_dir(build)
        env = self.get_recipe_env(arch)
        toolchain = os.path.join(self.ctx.ndk_dir, "build", "cmake", "android.toolchain.cmake")
        with current_directory(build):
            shprint(
                sh.cmake,
                source,
                f"-DCMAKE_TOOLCHAIN_FILE={toolchain}",
                f"-DANDROID_ABI={arch.arch}",
                f"-DANDROID_NATIVE_API_LEVEL={self.ctx.ndk_api}",
                "-DCMAKE_BUILD_TYPE=Release",
                "-DCMAKE_POSITION_INDEPENDENT_CODE=ON",
                "-DBUILD_SHARED_LIBS=OFF",
                "-DNNG_TESTS=OFF",
                "-DNNG_TOOLS=OFF",
                "-DNNG_ENABLE_NNGCAT=OFF",
                "-DNNG_ENABLE_TLS=OFF",  # TLS for the IP link is done in Python (relay/links/ip_tls.py)
                _env=env,
            )
            shprint(sh.make, f"-j{self.ctx.concurrent_make_jobs}", _env=env)

    def include_dir(self, arch):
        return os.path.join(self.get_build_dir(arch.arch), "include")

    def lib_dir(self, arch):
        return os.path.join(self.get_build_dir(arch.arch), "build")


recipe = NngRecipe()
