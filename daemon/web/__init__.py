"""`dupwatch serve`: the local web app over the same database the daemon fills (search by image, review and decide).

`app` wires the routes; `guard` decides who may ask (host, token, CSRF) and which files may be shown; `search` owns
the CNN and a read-only pipeline in one thread; `review` turns the report model into pages; `live` streams status.
"""
