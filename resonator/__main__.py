import sys

from resonator.resonator import main

sys.exit(main())
