"""Build the fastloop C extensions from their Cython sources.

FASTLOOP_DEBUG=1 builds with Cython line tracing and C asserts enabled (slower;
for profiling with py-spy/coverage and for catching invariant violations).
FASTLOOP_LIBKQUEUE=<prefix> (Linux) links the poller with libkqueue installed
under <prefix>, which adds the "kqueue" backend macOS and the BSDs have, so
that it can be tested on Linux.
"""
import os
import sys

from setuptools import Extension, setup

DEBUG = os.environ.get("FASTLOOP_DEBUG", "") not in ("", "0")

MODULES = ["_handles", "_poller", "_core", "_recvbuf", "_futures", "_streams", "_servers", "_transports", "_sockops"]


def with_libkqueue(module, macros):
    """The Extension arguments of `module`: its macros, and for the poller
    libkqueue's headers and library if FASTLOOP_LIBKQUEUE names them."""
    prefix = os.environ.get("FASTLOOP_LIBKQUEUE", "")
    if module != "_poller" or not prefix or not sys.platform.startswith("linux"):
        return dict(define_macros=macros)
    lib = os.path.join(prefix, "lib")
    return dict(
        define_macros=macros + [("FL_USE_LIBKQUEUE", "1")],
        include_dirs=[os.path.join(prefix, "include", "kqueue")],
        library_dirs=[lib], runtime_library_dirs=[lib], libraries=["kqueue"],
    )


def extensions():
    from Cython.Build import cythonize

    macros = []
    cflags = ["-O2"] if not DEBUG else ["-O0", "-g"]
    if sys.platform != "win32":
        cflags.append("-fno-strict-aliasing")
        # GCC 14+ (the wheel builders' compilers) refuse these; make older
        # compilers refuse them too, so a local build catches what they would.
        cflags.append("-Werror=incompatible-pointer-types")
    directives = {
        "language_level": 3,
        "boundscheck": False,
        "wraparound": False,
        "cdivision": True,
        "embedsignature": True,
        # Plain method descriptors: cheaper to call than Cython function objects.
        "binding": False,
    }
    if DEBUG:
        directives.update(linetrace=True, profile=True)
        macros.append(("CYTHON_TRACE_NOGIL", "1"))
    else:
        macros.append(("NDEBUG", "1"))
    exts = [
        Extension(
            f"fastloop.{name}",
            [f"fastloop/{name}.pyx"],
            extra_compile_args=cflags,
            **with_libkqueue(name, macros),
        )
        for name in MODULES
    ]
    return cythonize(
        exts,
        compiler_directives=directives,
        annotate=os.environ.get("FASTLOOP_ANNOTATE", "") not in ("", "0"),
        nthreads=int(os.environ.get("FASTLOOP_BUILD_JOBS", "0")),
    )


setup(ext_modules=extensions())
