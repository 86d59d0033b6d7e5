"""The local web page: static assets, the page's session (cookie + CSRF) and its security headers."""
