"""The HTTP layer of the ``/classify`` door, and what both HTTP doors share: the body read
stage, the error mapping, the middlewares, health and metrics endpoints.

The app that puts the doors together is :func:`service.app.create_app`.
"""
