from ocrbench.cli import main

main()
