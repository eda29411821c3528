import sys

from tlcore.cli import main

sys.exit(main())
