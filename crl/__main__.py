"""``python -m crl`` runs the crl command."""

import sys

from crl.cli import main

sys.exit(main())
