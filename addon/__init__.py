"""mitmproxy addon that captures ByteDance rotate and slide captchas and has omocaptcha solve them."""
