from pilot import create_app

app = create_app()
