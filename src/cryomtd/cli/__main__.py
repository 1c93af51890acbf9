import sys

from cryomtd.cli import main

sys.exit(main())
