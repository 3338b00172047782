"""python-for-android recipe: pynng (cffi bindings) against the nng recipe's static library.

pynng's own build runs CMake for nng (and mbedTLS) on the host; here nng comes from the ``nng``
recipe, so the cffi build is pointed at its headers and ``libnng.a``. Untested: pynng's setup.py
still has to be told to skip its own CMake step (the ``PYNNG_*`` variables below are what a small
patch to its ``setup.py``/``build_pynng.py`` would read; the patch is not written). Not built here
(no Android NDK on the build machine).
"""

from typing import ClassVar

from pythonforandroid.recipe import CompiledComponentsPythonRecipe, Recipe


class PynngRecipe(CompiledComponentsPythonRecipe):
    version = "0.8.1"
    url = "https://github.com/codypiersall/pynng/archive/refs/tags/v{version}.tar.gz"
    depends: ClassVar[list[str]] = ["nng", "cffi", "sniffio"]
    call_hostpython_via_targetpython = False
    install_in_hostpython = False

    def get_recipe_env(self, arch=None, with_flags_in_cc=True):
        env = super().get_recipe_env(arch, with_flags_in_cc)
        nng = Recipe.get_recipe("nng", self.ctx)
        env["CFLAGS"] = env.get("CFLAGS", "") + f" -I{nng.include_dir(arch)}"
        env["LDFLAGS"] = env.get("LDFLAGS", "") + f" -L{nng.lib_dir(arch)}"
        env["PYNNG_NNG_PREFIX"] = nng.get_build_dir(arch.arch)  # skip building nng again
        env["PYNNG_SKIP_CMAKE"] = "1"
        return env


recipe = PynngRecipe()
