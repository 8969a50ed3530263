"""Everything that talks to AWS. The only package that imports boto3.

One module per concern: ``session`` (root identity, clients, the thread-bound
call wrapper and the single exception map), ``naming`` (user and session
names), ``credtypes`` (one module per credential type: its row and what it does,
calling the machinery here), ``iam_user`` (create and delete temporary users),
``static_user`` (rotate an existing user's key), ``sts`` (the three STS calls),
``sessions`` (deny live sessions), ``root`` (rotate-root), ``backend`` (the
facade the agent drives).
"""
