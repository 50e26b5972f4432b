import sys

from rpger_ops.cli import main

sys.exit(main())
