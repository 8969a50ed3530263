"""Everything that talks to AWS. The only package that imports boto3.

One module per concern: ``session`` (the root identity: key store, which key
signs a call, ``call``), ``clients`` (building boto3 clients, off the loop),
``mfa`` (the MFA session), ``calls`` (threaded, bounded calls), ``errors`` (the
one exception map), ``attempts`` (botocore's per-attempt hooks), ``naming``
(user and session names), ``credtypes`` (one module per credential type: its
row and what it does, calling the machinery here), ``iam_user`` (create and
delete temporary users), ``static_user`` (rotate an existing user's key),
``sts`` (the three STS credential types), ``session_revocation`` (deny live STS
sessions), ``root`` (rotate-root), ``staticstore`` (a static role's key sealed at
rest), ``fleet_records`` and ``fleet_table`` (the fleet's DynamoDB table),
``backend`` (the facade the agent drives), ``standin`` (moto, for the demo, tests
and benchmarks; never in the agent). ``rootkeys`` (where the root's key lives),
``probe`` (the CLI's identity check) and ``naming`` live here beside the code that
uses them; ``rootkeys``, ``staticstore`` and ``naming`` import no boto3.
"""
