"""`python -m loyalty_mail` runs the command line."""

from loyalty_mail.cli import main

main()
