import sys

from dyncreds.cli import main

sys.exit(main())
