import sys

from camagent.main import main

sys.exit(main(sys.argv[1:]))
