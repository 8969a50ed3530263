"""Everything that talks to AWS. The only package that imports boto3.

One module per concern: ``session`` (root identity, clients, the thread-bound
call wrapper and the single exception map), ``naming`` (user and session
names), ``iam_user`` (create and delete temporary users), ``sts`` (the three STS
credential types), ``root`` (rotate-root), ``backend`` (the facade the agent
drives).
"""
