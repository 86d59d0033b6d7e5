import sys

from ems.cli import main

sys.exit(main())
