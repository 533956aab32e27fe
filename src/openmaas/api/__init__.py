"""The HTTP layer: the FastAPI app factory, dependencies, error mapping and one router per resource.

Routes parse, call one service function and shape the response; no other module imports this one.
"""
