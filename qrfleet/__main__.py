import sys

from qrfleet.cli import main

sys.exit(main())
