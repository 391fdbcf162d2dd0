from pxeforge.cli.main import main

main()
