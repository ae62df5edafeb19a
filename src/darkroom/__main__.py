from darkroom.cli import main

main()
