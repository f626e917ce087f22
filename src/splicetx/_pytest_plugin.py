"""
The pytest plugin of splicetx (registered through the C{pytest11} entry
point): fixtures for testing relays and proxies.  It imports no reactor.
"""
