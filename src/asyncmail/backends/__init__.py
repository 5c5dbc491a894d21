"""Built-in e-mail backends: smtp, console, filebased, locmem, dummy."""
