"""``python -m cnnc.cli ...`` (the form MPI launchers are given) runs the command line."""
from .main import main

raise SystemExit(main())
