import sys

from transferlab.cli import main

sys.exit(main())
