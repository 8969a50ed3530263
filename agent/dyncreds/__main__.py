import sys

from dyncreds.commands import main

sys.exit(main())
