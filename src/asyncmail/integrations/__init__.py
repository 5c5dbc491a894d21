"""Optional integrations, each in its own module, importing its framework
lazily (the core never imports them):

* :mod:`asyncmail.integrations.starlette`: one pooled backend for an ASGI
  app's lifetime (Starlette, FastAPI), through its lifespan;
* :mod:`asyncmail.integrations.jinja2`: subject, text and HTML rendered from
  Jinja2 templates, HTML autoescaped (``pip install "asyncmail[jinja2]"``).
"""
