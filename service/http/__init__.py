"""What the two HTTP doors (``/classify`` and V2 REST) share: the transport of a call
and the route class that names their server spans."""
