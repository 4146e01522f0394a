from nextbest.command import main

main()
