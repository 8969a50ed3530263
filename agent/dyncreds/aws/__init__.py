"""Everything that talks to AWS. The only package that imports boto3.

One module per concern: ``session`` (the root identity: key store, which key
signs a call, ``call``), ``clients`` (building boto3 clients, off the loop),
``mfa`` (the MFA session), ``calls`` (threaded, bounded calls), ``errors`` (the
one exception map), ``attempts`` (botocore's per-attempt hooks), ``naming``
(user and session names), ``credtypes`` (one module per credential type: its
row and what it does, calling the machinery here), ``iam_user`` (create and
delete temporary users), ``static_user`` (rotate an existing user's key),
``sts`` (the three STS credential types), ``session_revocation`` (deny live STS
sessions), ``root`` (rotate-root), ``backend`` (the facade the agent drives),
``standin`` (moto, for the demo, tests and benchmarks; never in the agent).
"""
