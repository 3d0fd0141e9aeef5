"""`python .ci/pytest_with_sigint.py ARGS` = `python -m pytest ARGS` with
SIGINT back to its default disposition first. A job started in the
background inherits SIGINT ignored (a shell cannot undo that), and the
Ctrl-C tests need it delivered; the default survives the exec."""
import os
import signal
import sys

signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execvp(sys.executable, [sys.executable, "-m", "pytest", *sys.argv[1:]])
