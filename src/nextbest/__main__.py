from nextbest.cli import app

app()
