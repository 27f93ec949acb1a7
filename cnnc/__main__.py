"""``python -m cnnc ...`` runs the command line, as the ``cnnc`` script does."""
from .cli.main import main

raise SystemExit(main())
