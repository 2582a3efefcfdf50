#!/usr/bin/env python3
"""Generate labelled CloudTrail logs in which two non-human credentials leak.

Writes one CloudTrail file per scenario, region and delivery hour, in the
layout and record format that AWS uses for a trail (`{"Records": [...]}`),
and OUTDIR/labels.csv, which labels every eventID `attack` or `normal`.
testdata/scenarios/README.md describes the four scenarios.

The output depends only on SEED, so a second run writes identical bytes.
NOTE: the gzip bytes can differ between zlib versions, but the records inside
cannot.

Usage: make-scenarios.py [--replace] OUTDIR
"""

import argparse
import base64
import collections
import csv
import gzip
import json
import random
import shutil
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

SEED = 20240304
ACCOUNT_ID = "111122223333"
# Account that receives the shared EBS snapshots in the leak scenario.
EXFILTRATION_ACCOUNT_ID = "444455556666"
HOME_REGION = "us-east-1"
# Monday. Day numbers below count from here, so day 10 is a Thursday and
# day 12 a Saturday.
START = datetime(2024, 3, 4, tzinfo=timezone.utc)
DAYS = 14
LEAK_DAY = 10
SESSION_THEFT_DAY = 12

# Attacker addresses that the GeoIP test databases in testdata/geoip contain
# (see the table in testdata/geoip/SOURCE.md):
# 89.160.20.115 is in 89.160.20.112/28, Linköping, Sweden (AS29518 Bredband2 AB).
# 216.160.83.58 is in 216.160.83.56/29, Milton, Washington, US (AS209).
# The two cities are about 7,650 km apart.
ATTACKER_IP_SWEDEN = "89.160.20.115"
ATTACKER_IP_US = "216.160.83.58"
# Documentation range (RFC 5737) that no GeoIP test database contains.
ATTACKER_IP_SESSION_THEFT = "203.0.113.77"

RUNNER_IPS = [f"10.20.30.{host}" for host in range(11, 19)]
REPORTER_IPS = ["198.51.100.23", "198.51.100.24"]

DEPLOYER_AGENT = "aws-cli/2.15.30 Python/3.11.8 Linux/6.5 exe/x86_64.ubuntu.22"
OIDC_AGENT = (
    "aws-sdk-js/3.511.0 ua/2.0 os/linux#6.5.0-1016-azure lang/js md/nodejs#20.11.0 "
    "api/sts#3.511.0 configure-aws-credentials-for-github-actions"
)
REPORTER_AGENT = (
    "Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0 os/linux#5.15 md/arch#x86_64 "
    "lang/python#3.11.6"
)
LEAK_AGENT_SWEDEN = (
    "aws-cli/1.18.69 Python/2.7.18 Linux/4.14.186-146.268.amzn2.x86_64 "
    "botocore/1.16.19"
)
LEAK_AGENT_US = "python-requests/2.31.0"
BROWSER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0"
)
THEFT_AGENT = (
    "Boto3/1.34.51 md/Botocore#1.34.51 ua/2.0 os/macos#23.3.0 md/arch#arm64 "
    "lang/python#3.12.2 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.51"
)

SCENARIOS = ["deployer", "reporter", "reporter-key-leak", "deployer-session-theft"]

ARTIFACT_BUCKET = "acme-ci-artifacts"
DATALAKE_BUCKET = "acme-datalake"
ATHENA_RESULTS_BUCKET = "acme-athena-results"
FINANCE_BUCKET = "acme-finance-exports"
REPORTING_TABLES = ["orders", "refunds", "payouts", "chargebacks"]
DEPLOYED_SERVICES = ["payments-api", "payments-worker"]
OIDC_PROVIDER = (
    f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/token.actions.githubusercontent.com"
)
OIDC_SUBJECT = "repo:acme/payments:ref:refs/heads/main"

# Secrets and parameters that the leaked key's new admin user reads in a burst.
LEAKED_SECRET_IDS = [
    "prod/payments/stripe-api-key",
    "prod/payments/db-master",
    "prod/reporting/readonly-db",
    "prod/ledger/db-master",
    "prod/ci/github-app-private-key",
    "prod/ci/npm-publish-token",
    "prod/support/zendesk-api-token",
    "prod/email/sendgrid-api-key",
    "prod/auth/jwt-signing-key",
    "prod/auth/okta-client-secret",
    "prod/data/snowflake-service-user",
    "prod/monitoring/datadog-api-key",
    "staging/payments/db-master",
    "staging/auth/jwt-signing-key",
]
LEAKED_PARAMETER_NAMES = [
    ["/prod/payments/webhook-secret", "/prod/payments/encryption-key"],
    ["/prod/ledger/api-token", "/prod/ledger/hmac-key", "/prod/ledger/db-url"],
    ["/prod/ci/deploy-key", "/prod/ci/signing-key"],
]
RECON_REGIONS = [
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-1",
]

BASE32_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
ALPHANUMERIC = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
UPPER_HEX = "0123456789ABCDEF"

# Error codes of an access denial in the form each service's CloudTrail
# records use. Services not listed use AccessDeniedException.
DENIAL_CODES = {
    "ec2.amazonaws.com": "Client.UnauthorizedOperation",
    "iam.amazonaws.com": "AccessDenied",
    "s3.amazonaws.com": "AccessDenied",
    "sts.amazonaws.com": "AccessDenied",
    "rds.amazonaws.com": "AccessDenied",
}


def format_time(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_iam_date(moment):
    """Format a time as IAM and STS response elements do: "Mar 14, 2024 1:16:04 PM"."""
    hour = moment.hour % 12 or 12
    meridiem = "AM" if moment.hour < 12 else "PM"
    return f"{moment:%b} {moment.day}, {moment.year} {hour}:{moment:%M:%S} {meridiem}"


def service_action(event_source, event_name):
    """Return the IAM action for an event, such as `lambda:UpdateFunctionCode`."""
    prefix = event_source.split(".")[0]
    for suffix in ("20150331v2", "20150331"):
        event_name = event_name.removesuffix(suffix)
    return f"{prefix}:{event_name}"


def s3_host(bucket):
    return f"{bucket}.s3.{HOME_REGION}.amazonaws.com"


def bucket_resource(bucket):
    return {
        "accountId": ACCOUNT_ID,
        "type": "AWS::S3::Bucket",
        "ARN": f"arn:aws:s3:::{bucket}",
    }


class Generator:
    """Event list of all scenarios and the seeded random generator that builds them."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        # (scenario, label, eventTime, record)
        self.events = []
        self.event_ids = set()

    # Random values that look like AWS identifiers.

    def random_uuid(self):
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def random_text(self, alphabet, length):
        return "".join(self.rng.choice(alphabet) for _ in range(length))

    def random_hex(self, length):
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(length))

    def access_key_id(self, prefix):
        return prefix + self.random_text(BASE32_ALPHABET, 16)

    def principal_id(self, prefix):
        return prefix + self.random_text(BASE32_ALPHABET, 17)

    # Identities.

    def iam_user(self, user_name, user_id, access_key_id):
        return {
            "type": "IAMUser",
            "principalId": user_id,
            "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/{user_name}",
            "accountId": ACCOUNT_ID,
            "accessKeyId": access_key_id,
            "userName": user_name,
        }

    def role_session(self, role_name, role_id, session_name, access_key_id, created):
        return {
            "type": "AssumedRole",
            "principalId": f"{role_id}:{session_name}",
            "arn": f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role_name}/{session_name}",
            "accountId": ACCOUNT_ID,
            "accessKeyId": access_key_id,
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": role_id,
                    "arn": f"arn:aws:iam::{ACCOUNT_ID}:role/{role_name}",
                    "accountId": ACCOUNT_ID,
                    "userName": role_name,
                },
                "webIdFederationData": {},
                "attributes": {
                    "creationDate": format_time(created),
                    "mfaAuthenticated": "false",
                },
            },
        }

    # Records.

    def add(
        self,
        scenario,
        label,
        when,
        identity,
        event_source,
        event_name,
        *,
        region=HOME_REGION,
        source_ip,
        user_agent,
        request=None,
        response=None,
        error_code=None,
        error_message=None,
        read_only=None,
        invoked_by=None,
        event_type="AwsApiCall",
        additional=None,
        resources=None,
        request_id=None,
        data_event=False,
        console_session=False,
    ):
        """Append one CloudTrail record and return it.

        When `invoked_by` names an AWS service, the service made the call with
        the identity's credentials. CloudTrail then records the service name
        as source address and user agent and adds `userIdentity.invokedBy`.
        """
        if invoked_by:
            identity = dict(identity, invokedBy=invoked_by)
            source_ip = invoked_by
            user_agent = invoked_by
        if read_only is None:
            read_only = event_name.startswith(
                ("Get", "List", "Describe", "BatchGet", "Head")
            )
        if data_event and event_source == "s3.amazonaws.com" and not invoked_by:
            # S3 writes the user agent of object-level calls in brackets.
            user_agent = f"[{user_agent}]"

        record = {
            "eventVersion": "1.09",
            "userIdentity": identity,
            "eventTime": format_time(when),
            "eventSource": event_source,
            "eventName": event_name,
            "awsRegion": region,
            "sourceIPAddress": source_ip,
            "userAgent": user_agent,
        }
        if error_code:
            record["errorCode"] = error_code
            record["errorMessage"] = error_message
            response = None
        record["requestParameters"] = request
        record["responseElements"] = response
        if additional is not None:
            record["additionalEventData"] = additional
        if event_type == "AwsApiCall":
            record["requestID"] = request_id or self.random_uuid()
        event_id = self.random_uuid()
        record["eventID"] = event_id
        record["readOnly"] = read_only
        if resources is not None:
            record["resources"] = resources
        record["eventType"] = event_type
        record["managementEvent"] = not data_event
        record["recipientAccountId"] = ACCOUNT_ID
        record["eventCategory"] = "Data" if data_event else "Management"
        if not invoked_by:
            record["tlsDetails"] = {
                "tlsVersion": "TLSv1.3",
                "cipherSuite": "TLS_AES_128_GCM_SHA256",
                "clientProvidedHostHeader": self.endpoint(
                    event_source, region, request
                ),
            }
        if console_session:
            record["sessionCredentialFromConsole"] = "true"

        if event_id in self.event_ids:
            raise RuntimeError(f"internal error: eventID {event_id} generated twice")
        self.event_ids.add(event_id)
        self.events.append((scenario, label, when, record))
        return record

    @staticmethod
    def endpoint(event_source, region, request):
        """Return the host name that a client sends for this call."""
        service = event_source.split(".")[0]
        if service == "iam":
            return "iam.amazonaws.com"
        if service == "signin":
            return "signin.aws.amazon.com"
        if service == "s3" and request and "bucketName" in request:
            return f"{request['bucketName']}.s3.{region}.amazonaws.com"
        return f"{service}.{region}.amazonaws.com"

    def denied(self, identity, event_source, event_name, resource="*"):
        """Return the errorCode and errorMessage of an implicit deny."""
        code = DENIAL_CODES.get(event_source, "AccessDeniedException")
        action = service_action(event_source, event_name)
        message = (
            f"User: {identity['arn']} is not authorized to perform: {action} "
            f"on resource: {resource} because no identity-based policy allows "
            f"the {action} action"
        )
        if event_source == "ec2.amazonaws.com":
            message = "You are not authorized to perform this operation. " + message
        return {"error_code": code, "error_message": message}

    def s3_object(
        self,
        scenario,
        label,
        when,
        identity,
        event_name,
        bucket,
        key,
        *,
        source_ip=None,
        user_agent=None,
        invoked_by=None,
        size=None,
        **extra,
    ):
        """Append an S3 object-level data event (GetObject, PutObject)."""
        size = size if size is not None else self.rng.randint(2_000, 4_000_000)
        reading = event_name == "GetObject"
        additional = {
            "SignatureVersion": "SigV4",
            "CipherSuite": "TLS_AES_128_GCM_SHA256",
            "bytesTransferredIn": 0 if reading else size,
            "AuthenticationMethod": "AuthHeader",
            "x-amz-id-2": base64.b64encode(self.rng.randbytes(36)).decode(),
            "bytesTransferredOut": size if reading else 0,
        }
        if reading:
            response = None
        else:
            response = {"x-amz-server-side-encryption": "AES256"}
        return self.add(
            scenario,
            label,
            when,
            identity,
            "s3.amazonaws.com",
            event_name,
            source_ip=source_ip,
            user_agent=user_agent,
            invoked_by=invoked_by,
            request={"bucketName": bucket, "Host": s3_host(bucket), "key": key},
            response=response,
            additional=additional,
            request_id=self.random_text(UPPER_HEX, 16),
            resources=[
                {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/{key}"},
                bucket_resource(bucket),
            ],
            data_event=True,
            **extra,
        )

    def s3_list_objects(
        self, scenario, label, when, identity, bucket, prefix, *, source_ip, user_agent
    ):
        """Append an S3 ListObjectsV2 call, which CloudTrail names ListObjects."""
        return self.add(
            scenario,
            label,
            when,
            identity,
            "s3.amazonaws.com",
            "ListObjects",
            source_ip=source_ip,
            user_agent=user_agent,
            request={
                "bucketName": bucket,
                "Host": s3_host(bucket),
                "list-type": "2",
                "prefix": prefix,
                "encoding-type": "url",
            },
            additional={
                "SignatureVersion": "SigV4",
                "CipherSuite": "TLS_AES_128_GCM_SHA256",
                "bytesTransferredIn": 0,
                "AuthenticationMethod": "AuthHeader",
                "bytesTransferredOut": self.rng.randint(800, 60_000),
            },
            request_id=self.random_text(UPPER_HEX, 16),
            resources=[bucket_resource(bucket)],
            data_event=True,
        )


class Clock:
    """Current time of a simulated client, advanced by short pauses between calls."""

    def __init__(self, rng, start):
        self.rng = rng
        self.now = start

    def tick(self, low=0.2, high=3.0):
        self.now += timedelta(seconds=self.rng.uniform(low, high))
        return self.now


# Scenario 1: the CI deployer role.


class Deployer:
    """Normal traffic of the `deployer` role, assumed by GitHub Actions runs."""

    ROLE = "deployer"

    def __init__(self, generator):
        self.gen = generator
        self.rng = generator.rng
        self.role_id = generator.principal_id("AROA")
        self.run_id = 8_123_456_789
        self.task_revisions = {
            service: 400 + index * 150
            for index, service in enumerate(DEPLOYED_SERVICES)
        }
        # Session of the day-12 nightly run, whose credentials the attacker reuses.
        self.stolen_session = None

    def scenario_for(self, day):
        if day == SESSION_THEFT_DAY:
            return "deployer-session-theft"
        return "deployer"

    def start_session(self, scenario, when, runner_ip):
        """Append the AssumeRoleWithWebIdentity call of a run and return the session."""
        self.run_id += self.rng.randint(3, 400)
        session_name = f"gh-actions-{self.run_id}"
        access_key = self.gen.access_key_id("ASIA")
        duration = 21_600
        web_identity = {
            "type": "WebIdentityUser",
            "principalId": f"{OIDC_PROVIDER}:sts.amazonaws.com:{OIDC_SUBJECT}",
            "userName": OIDC_SUBJECT,
            "identityProvider": OIDC_PROVIDER,
        }
        role_arn = f"arn:aws:iam::{ACCOUNT_ID}:role/{self.ROLE}"
        session_arn = (
            f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{self.ROLE}/{session_name}"
        )
        self.gen.add(
            scenario,
            "normal",
            when,
            web_identity,
            "sts.amazonaws.com",
            "AssumeRoleWithWebIdentity",
            source_ip=runner_ip,
            user_agent=OIDC_AGENT,
            read_only=True,
            request={
                "roleArn": role_arn,
                "roleSessionName": session_name,
                "durationSeconds": duration,
            },
            response={
                "credentials": {
                    "accessKeyId": access_key,
                    "expiration": format_iam_date(when + timedelta(seconds=duration)),
                },
                "subjectFromWebIdentityToken": OIDC_SUBJECT,
                "assumedRoleUser": {
                    "assumedRoleId": f"{self.role_id}:{session_name}",
                    "arn": session_arn,
                },
                "provider": OIDC_PROVIDER,
                "audience": "sts.amazonaws.com",
            },
            resources=[
                {"accountId": ACCOUNT_ID, "type": "AWS::IAM::Role", "ARN": role_arn}
            ],
        )
        return self.gen.role_session(
            self.ROLE, self.role_id, session_name, access_key, when
        )

    def call(
        self,
        scenario,
        clock,
        identity,
        runner_ip,
        event_source,
        event_name,
        request=None,
        response=None,
        resource="*",
        deniable=True,
        **extra,
    ):
        """Append one CLI call of a run.

        2% of the deniable calls fail with an access denial, which makes about
        1% of all the role's calls.
        """
        when = clock.tick()
        denial = {}
        if deniable and self.rng.random() < 0.02:
            denial = self.gen.denied(identity, event_source, event_name, resource)
        return self.gen.add(
            scenario,
            "normal",
            when,
            identity,
            event_source,
            event_name,
            source_ip=runner_ip,
            user_agent=DEPLOYER_AGENT,
            request=request,
            response=response,
            **denial,
            **extra,
        )

    def deploy(self, day, start, with_stack_update):
        """Append one deploy run: artefacts to S3, new task definitions, ECS rollout."""
        scenario = self.scenario_for(day)
        runner_ip = self.rng.choice(RUNNER_IPS)
        identity = self.start_session(scenario, start, runner_ip)
        session_name = identity["arn"].rsplit("/", 1)[1]
        clock = Clock(self.rng, start + timedelta(seconds=self.rng.uniform(1, 4)))
        image_tag = f"sha-{self.gen.random_hex(7)}"

        def call(event_source, event_name, **options):
            self.call(
                scenario,
                clock,
                identity,
                runner_ip,
                event_source,
                event_name,
                **options,
            )

        call("sts.amazonaws.com", "GetCallerIdentity", deniable=False)
        call("ecr.amazonaws.com", "GetAuthorizationToken")
        services = DEPLOYED_SERVICES[: self.rng.choice([1, 2, 2])]
        for service in services:
            repository = f"arn:aws:ecr:{HOME_REGION}:{ACCOUNT_ID}:repository/{service}"
            call(
                "ecr.amazonaws.com",
                "DescribeImages",
                request={
                    "repositoryName": service,
                    "imageIds": [{"imageTag": image_tag}],
                },
                resource=repository,
            )
            for _ in range(self.rng.randint(1, 2)):
                call(
                    "ecr.amazonaws.com",
                    "BatchGetImage",
                    request={
                        "repositoryName": service,
                        "imageIds": [{"imageTag": image_tag}],
                        "acceptedMediaTypes": [
                            "application/vnd.docker.distribution.manifest.v2+json",
                            "application/vnd.oci.image.manifest.v1+json",
                        ],
                    },
                    resource=repository,
                )

        self.transfer_artefacts(scenario, clock, identity, runner_ip)

        log_stream = f"log-group:/ci/deploy:log-stream:{session_name}"
        call(
            "logs.amazonaws.com",
            "CreateLogStream",
            request={"logGroupName": "/ci/deploy", "logStreamName": session_name},
            resource=f"arn:aws:logs:{HOME_REGION}:{ACCOUNT_ID}:{log_stream}",
        )
        # NOTE: the runs write their deploy log to this stream, but the records
        # contain no PutLogEvents calls because, as far as we know, CloudTrail
        # does not record them.

        if with_stack_update:
            # The stack owns payments-api, so CloudFormation rolls that one out.
            self.update_stack(scenario, clock, identity, runner_ip, image_tag)
        for service in services:
            if with_stack_update and service == "payments-api":
                continue
            self.roll_out(scenario, clock, identity, runner_ip, service, image_tag)

    def transfer_artefacts(self, scenario, clock, identity, runner_ip):
        """Append the cache downloads and artefact uploads of a run."""
        clock.tick()
        self.gen.s3_list_objects(
            scenario,
            "normal",
            clock.now,
            identity,
            ARTIFACT_BUCKET,
            "payments/cache/",
            source_ip=runner_ip,
            user_agent=DEPLOYER_AGENT,
        )
        for _ in range(self.rng.randint(1, 3)):
            kind = self.rng.choice(["deps", "assets", "manifests"])
            key = f"payments/cache/{kind}-{self.gen.random_hex(8)}.tar.zst"
            clock.tick()
            denial = {}
            if self.rng.random() < 0.02:
                denial = self.gen.denied(
                    identity,
                    "s3.amazonaws.com",
                    "GetObject",
                    f"arn:aws:s3:::{ARTIFACT_BUCKET}/{key}",
                )
            self.gen.s3_object(
                scenario,
                "normal",
                clock.now,
                identity,
                "GetObject",
                ARTIFACT_BUCKET,
                key,
                source_ip=runner_ip,
                user_agent=DEPLOYER_AGENT,
                **denial,
            )
        artefacts = [
            "bundle.tar.gz",
            "sbom.spdx.json",
            "junit.xml",
            "coverage.xml",
            "manifest.json",
            "checksums.txt",
        ]
        for name in self.rng.sample(artefacts, self.rng.randint(2, 5)):
            clock.tick()
            self.gen.s3_object(
                scenario,
                "normal",
                clock.now,
                identity,
                "PutObject",
                ARTIFACT_BUCKET,
                f"payments/{self.run_id}/{name}",
                source_ip=runner_ip,
                user_agent=DEPLOYER_AGENT,
            )

    def task_definition_request(self, service, image_tag):
        registry = f"{ACCOUNT_ID}.dkr.ecr.{HOME_REGION}.amazonaws.com"
        return {
            "family": service,
            "taskRoleArn": f"arn:aws:iam::{ACCOUNT_ID}:role/{service}-task",
            "executionRoleArn": f"arn:aws:iam::{ACCOUNT_ID}:role/ecs-task-execution",
            "networkMode": "awsvpc",
            "containerDefinitions": [
                {
                    "name": service,
                    "image": f"{registry}/{service}:{image_tag}",
                    "cpu": 512,
                    "memory": 1024,
                    "essential": True,
                    "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
                    "logConfiguration": {
                        "logDriver": "awslogs",
                        "options": {
                            "awslogs-group": f"/ecs/{service}",
                            "awslogs-region": HOME_REGION,
                            "awslogs-stream-prefix": "ecs",
                        },
                    },
                }
            ],
            "requiresCompatibilities": ["FARGATE"],
            "cpu": "512",
            "memory": "1024",
        }

    def register_and_update(
        self, scenario, clock, identity, runner_ip, service, image_tag, invoked_by=None
    ):
        """Append a new task definition revision and the service update that uses it."""
        self.task_revisions[service] += 1
        revision = self.task_revisions[service]
        ecs_prefix = f"arn:aws:ecs:{HOME_REGION}:{ACCOUNT_ID}"
        task_arn = f"{ecs_prefix}:task-definition/{service}:{revision}"
        options = {"invoked_by": invoked_by} if invoked_by else {}
        self.call(
            scenario,
            clock,
            identity,
            runner_ip,
            "ecs.amazonaws.com",
            "RegisterTaskDefinition",
            request=self.task_definition_request(service, image_tag),
            response={
                "taskDefinition": {
                    "taskDefinitionArn": task_arn,
                    "family": service,
                    "revision": revision,
                    "status": "ACTIVE",
                }
            },
            deniable=False,
            **options,
        )
        self.call(
            scenario,
            clock,
            identity,
            runner_ip,
            "ecs.amazonaws.com",
            "UpdateService",
            request={
                "cluster": "prod",
                "service": service,
                "taskDefinition": f"{service}:{revision}",
                "forceNewDeployment": False,
            },
            response={
                "service": {
                    "serviceArn": f"{ecs_prefix}:service/prod/{service}",
                    "serviceName": service,
                    "clusterArn": f"{ecs_prefix}:cluster/prod",
                    "taskDefinition": task_arn,
                    "desiredCount": 3,
                    "runningCount": 3,
                    "pendingCount": 0,
                    "launchType": "FARGATE",
                    "status": "ACTIVE",
                }
            },
            deniable=False,
            **options,
        )

    def roll_out(self, scenario, clock, identity, runner_ip, service, image_tag):
        """Append the update of one ECS service and the polling until it is stable."""
        service_arn = f"arn:aws:ecs:{HOME_REGION}:{ACCOUNT_ID}:service/prod/{service}"

        def call(event_name, **options):
            self.call(
                scenario,
                clock,
                identity,
                runner_ip,
                "ecs.amazonaws.com",
                event_name,
                **options,
            )

        call(
            "DescribeTaskDefinition",
            request={"taskDefinition": service},
            deniable=False,
        )
        self.register_and_update(
            scenario, clock, identity, runner_ip, service, image_tag
        )
        # `aws ecs wait services-stable` polls every 15 seconds.
        for _ in range(self.rng.randint(3, 9)):
            clock.tick(14.5, 15.5)
            call(
                "DescribeServices",
                request={"cluster": "prod", "services": [service]},
                resource=service_arn,
            )
        if self.rng.random() < 0.5:
            call(
                "ListTasks",
                request={
                    "cluster": "prod",
                    "serviceName": service,
                    "desiredStatus": "RUNNING",
                },
            )

    def update_stack(self, scenario, clock, identity, runner_ip, image_tag):
        """Append a CloudFormation change set and the calls CloudFormation makes."""
        stack = "payments-prod"
        stack_prefix = f"arn:aws:cloudformation:{HOME_REGION}:{ACCOUNT_ID}"
        stack_id = f"{stack_prefix}:stack/{stack}/6f1c2a40-d9a3-11ee-9f0e-0a1b2c3d4e5f"
        change_set = f"gh-{self.run_id}"
        template_host = f"https://{ARTIFACT_BUCKET}.s3.amazonaws.com"
        template = f"{template_host}/payments/{self.run_id}/stack.yaml"

        def call(event_source, event_name, on_clock=clock, **options):
            self.call(
                scenario,
                on_clock,
                identity,
                runner_ip,
                event_source,
                event_name,
                **options,
            )

        call(
            "cloudformation.amazonaws.com",
            "CreateChangeSet",
            request={
                "stackName": stack,
                "changeSetName": change_set,
                "changeSetType": "UPDATE",
                "templateURL": template,
                "parameters": [
                    {"parameterKey": "ImageTag", "parameterValue": image_tag}
                ],
                "capabilities": ["CAPABILITY_IAM"],
            },
            response={
                "id": f"{stack_prefix}:changeSet/{change_set}/{self.gen.random_uuid()}",
                "stackId": stack_id,
            },
            deniable=False,
        )
        for _ in range(self.rng.randint(2, 3)):
            clock.tick(4, 6)
            call(
                "cloudformation.amazonaws.com",
                "DescribeChangeSet",
                request={"changeSetName": change_set, "stackName": stack},
            )
        call(
            "cloudformation.amazonaws.com",
            "ExecuteChangeSet",
            request={"changeSetName": change_set, "stackName": stack},
            deniable=False,
        )

        # CloudFormation has no service role here, so it acts with the run's session.
        behalf = Clock(self.rng, clock.now)
        service_call = {
            "on_clock": behalf,
            "invoked_by": "cloudformation.amazonaws.com",
            "deniable": False,
        }
        call(
            "ssm.amazonaws.com",
            "GetParameters",
            request={
                "names": [
                    "/ci/payments/desired-count",
                    "/ci/payments/log-retention-days",
                ]
            },
            **service_call,
        )
        call(
            "logs.amazonaws.com",
            "PutRetentionPolicy",
            request={"logGroupName": "/ecs/payments-api", "retentionInDays": 30},
            **service_call,
        )
        self.register_and_update(
            scenario,
            behalf,
            identity,
            runner_ip,
            "payments-api",
            image_tag,
            invoked_by="cloudformation.amazonaws.com",
        )
        for _ in range(self.rng.randint(2, 4)):
            behalf.tick(10, 30)
            call(
                "ecs.amazonaws.com",
                "DescribeServices",
                request={"cluster": "prod", "services": ["payments-api"]},
                **service_call,
            )

        for _ in range(self.rng.randint(3, 6)):
            clock.tick(8, 12)
            call(
                "cloudformation.amazonaws.com",
                "DescribeStacks",
                request={"stackName": stack},
            )
        call(
            "cloudformation.amazonaws.com",
            "DescribeStackEvents",
            request={"stackName": stack},
        )
        clock.now = max(clock.now, behalf.now)

    def drift_check(self, day, start):
        """Append the nightly drift check, a short read-only run."""
        scenario = self.scenario_for(day)
        runner_ip = self.rng.choice(RUNNER_IPS)
        identity = self.start_session(scenario, start, runner_ip)
        clock = Clock(self.rng, start + timedelta(seconds=self.rng.uniform(1, 4)))

        def call(event_source, event_name, **options):
            self.call(
                scenario,
                clock,
                identity,
                runner_ip,
                event_source,
                event_name,
                **options,
            )

        call("sts.amazonaws.com", "GetCallerIdentity", deniable=False)
        call(
            "cloudformation.amazonaws.com",
            "DescribeStacks",
            request={"stackName": "payments-prod"},
        )
        call(
            "cloudformation.amazonaws.com",
            "DetectStackDrift",
            request={"stackName": "payments-prod"},
            response={"stackDriftDetectionId": self.gen.random_uuid()},
        )
        for service in DEPLOYED_SERVICES:
            call(
                "ecs.amazonaws.com",
                "DescribeServices",
                request={"cluster": "prod", "services": [service]},
            )
        if day == SESSION_THEFT_DAY:
            self.stolen_session = identity

    def generate(self):
        for day in range(DAYS):
            midnight = START + timedelta(days=day)
            weekday = midnight.weekday() < 5
            drift_delay = self.rng.uniform(20, 240)
            self.drift_check(day, midnight + timedelta(hours=1, seconds=drift_delay))
            for hour in range(7, 20, 2):
                if self.rng.random() > (0.9 if weekday else 0.08):
                    continue
                delay = self.rng.uniform(0, 1500)
                start = midnight + timedelta(hours=hour, seconds=delay)
                with_stack_update = weekday and hour == 11
                self.deploy(day, start, with_stack_update)
            # An occasional evening hotfix outside the usual hours.
            if weekday and self.rng.random() < 0.15:
                delay = self.rng.uniform(0, 3000)
                start = midnight + timedelta(hours=21, seconds=delay)
                self.deploy(day, start, False)


# Scenario 2: the reporting service user.


class Reporter:
    """Normal traffic of the IAM user `svc-reporter`: hourly Athena reports."""

    USER = "svc-reporter"

    def __init__(self, generator):
        self.gen = generator
        self.rng = generator.rng
        self.user_id = generator.principal_id("AIDA")
        self.access_key = generator.access_key_id("AKIA")
        self.identity = generator.iam_user(self.USER, self.user_id, self.access_key)

    def scenario_for(self, day):
        return "reporter-key-leak" if day == LEAK_DAY else "reporter"

    def call(
        self,
        scenario,
        when,
        ip,
        event_source,
        event_name,
        request=None,
        response=None,
        **extra,
    ):
        return self.gen.add(
            scenario,
            "normal",
            when,
            self.identity,
            event_source,
            event_name,
            source_ip=ip,
            user_agent=REPORTER_AGENT,
            request=request,
            response=response,
            **extra,
        )

    def query(self, scenario, clock, ip, table, day_start):
        """Append one Athena query: start, the reads Athena makes, polling, results."""
        execution_id = self.gen.random_uuid()
        self.call(
            scenario,
            clock.tick(),
            ip,
            "athena.amazonaws.com",
            "StartQueryExecution",
            request={
                "queryString": (
                    "SELECT merchant_id, count(*) AS n, sum(amount_cents) AS total "
                    f"FROM {table} WHERE dt = '{day_start:%Y-%m-%d}' GROUP BY 1"
                ),
                "clientRequestToken": self.gen.random_uuid(),
                "queryExecutionContext": {
                    "database": "reporting",
                    "catalog": "AwsDataCatalog",
                },
                "resultConfiguration": {
                    "outputLocation": f"s3://{ATHENA_RESULTS_BUCKET}/svc-reporter/"
                },
                "workGroup": "reporting",
            },
            response={"queryExecutionId": execution_id},
        )

        # Athena reads the catalog and the data with the caller's credentials.
        athena = Clock(self.rng, clock.now)
        self.call(
            scenario,
            athena.tick(0.1, 0.5),
            ip,
            "glue.amazonaws.com",
            "GetTable",
            request={
                "catalogId": ACCOUNT_ID,
                "databaseName": "reporting",
                "name": table,
            },
            invoked_by="athena.amazonaws.com",
        )
        for part in range(self.rng.randint(1, 2)):
            partition = f"{table}/dt={day_start:%Y-%m-%d}"
            key = f"{partition}/part-{part:05d}-{self.gen.random_hex(8)}.snappy.parquet"
            self.gen.s3_object(
                scenario,
                "normal",
                athena.tick(0.1, 0.8),
                self.identity,
                "GetObject",
                DATALAKE_BUCKET,
                key,
                invoked_by="athena.amazonaws.com",
            )
        self.gen.s3_object(
            scenario,
            "normal",
            athena.tick(0.5, 2),
            self.identity,
            "PutObject",
            ATHENA_RESULTS_BUCKET,
            f"svc-reporter/{execution_id}.csv",
            invoked_by="athena.amazonaws.com",
            size=self.rng.randint(500, 90_000),
        )

        # The client polls with exponential backoff until the query has run.
        finished = clock.now + timedelta(seconds=self.rng.uniform(3, 45))
        pause = 1
        while True:
            self.call(
                scenario,
                clock.tick(pause, pause + 0.3),
                ip,
                "athena.amazonaws.com",
                "GetQueryExecution",
                request={"queryExecutionId": execution_id},
            )
            if clock.now >= finished:
                break
            pause = min(pause * 2, 10)
        clock.now = max(clock.now, athena.now)

        for page in range(self.rng.randint(1, 2)):
            request = {"queryExecutionId": execution_id, "maxResults": 1000}
            if page:
                request["nextToken"] = base64.b64encode(self.rng.randbytes(24)).decode()
            self.call(
                scenario,
                clock.tick(0.2, 1),
                ip,
                "athena.amazonaws.com",
                "GetQueryResults",
                request=request,
            )
        if self.rng.random() < 0.75:
            self.gen.s3_object(
                scenario,
                "normal",
                clock.tick(),
                self.identity,
                "GetObject",
                ATHENA_RESULTS_BUCKET,
                f"svc-reporter/{execution_id}.csv",
                source_ip=ip,
                user_agent=REPORTER_AGENT,
            )

    def run(self, day, start):
        """Append one hourly report run with 2 to 4 Athena queries."""
        scenario = self.scenario_for(day)
        ip = self.rng.choice(REPORTER_IPS)
        clock = Clock(self.rng, start)
        day_start = START + timedelta(days=day)
        if start.hour == 2:
            # The nightly report reads its database password once a day.
            self.call(
                scenario,
                clock.tick(),
                ip,
                "secretsmanager.amazonaws.com",
                "GetSecretValue",
                request={"secretId": "prod/reporting/readonly-db"},
            )
        self.call(
            scenario,
            clock.tick(),
            ip,
            "glue.amazonaws.com",
            "GetTable",
            request={"databaseName": "reporting", "name": REPORTING_TABLES[0]},
        )
        query_count = self.rng.choice([2, 3, 3, 4, 4])
        for table in self.rng.sample(REPORTING_TABLES, query_count):
            self.query(scenario, clock, ip, table, day_start)

    def generate(self):
        for hour in range(DAYS * 24):
            delay = self.rng.uniform(0, 50)
            start = START + timedelta(hours=hour, minutes=5, seconds=delay)
            self.run(hour // 24, start)


# Scenario 3: the svc-reporter access key leaks.


class KeyLeak:
    """Attack with the leaked svc-reporter key, then with an admin user it creates."""

    SCENARIO = "reporter-key-leak"
    NEW_USER = "svc-backup-sync"

    def __init__(self, generator, reporter):
        self.gen = generator
        self.rng = generator.rng
        self.reporter = reporter
        self.new_user_id = generator.principal_id("AIDA")
        self.new_access_key = generator.access_key_id("AKIA")

    def call(
        self,
        clock,
        identity,
        ip,
        agent,
        event_source,
        event_name,
        request=None,
        response=None,
        deny_resource=None,
        low=0.4,
        high=4.0,
        **extra,
    ):
        """Append one attacker call, denied on `deny_resource` when that is given."""
        denial = {}
        if deny_resource is not None:
            denial = self.gen.denied(identity, event_source, event_name, deny_resource)
        return self.gen.add(
            self.SCENARIO,
            "attack",
            clock.tick(low, high),
            identity,
            event_source,
            event_name,
            source_ip=ip,
            user_agent=agent,
            request=request,
            response=response,
            **denial,
            **extra,
        )

    def generate(self):
        # The phases overlap the hourly report runs that start at 13:05 and 14:05.
        day_start = START + timedelta(days=LEAK_DAY)
        first_use = day_start + timedelta(hours=13, minutes=4, seconds=52)
        leaked = self.reporter.identity
        self.reconnaissance(Clock(self.rng, first_use), leaked)
        escalation_start = first_use + timedelta(minutes=8, seconds=30)
        self.escalate(Clock(self.rng, escalation_start), leaked)
        # 24 minutes after the first use from Sweden, the same key is used from the US.
        us_clock = Clock(self.rng, first_use + timedelta(minutes=24))
        self.check_from_us(us_clock, leaked)
        admin = self.gen.iam_user(self.NEW_USER, self.new_user_id, self.new_access_key)
        self.collect_secrets(us_clock, admin)
        us_clock.now = day_start + timedelta(hours=14, minutes=6, seconds=5)
        self.exfiltrate(us_clock, admin)
        self.tamper_with_logs(us_clock, admin)
        self.console_visit(day_start + timedelta(hours=14, minutes=42, seconds=13))

    def reconnaissance(self, clock, leaked):
        ip, agent = ATTACKER_IP_SWEDEN, LEAK_AGENT_SWEDEN

        def call(event_source, event_name, **options):
            self.call(clock, leaked, ip, agent, event_source, event_name, **options)

        call("sts.amazonaws.com", "GetCallerIdentity")

        # The key's legacy inline policy allows IAM user management but not the rest.
        call("iam.amazonaws.com", "ListUsers")
        call(
            "iam.amazonaws.com",
            "ListAttachedUserPolicies",
            request={"userName": "svc-reporter"},
        )
        call(
            "iam.amazonaws.com",
            "ListUserPolicies",
            request={"userName": "svc-reporter"},
        )
        call(
            "iam.amazonaws.com",
            "GetUserPolicy",
            request={"userName": "svc-reporter", "policyName": "reporting-legacy"},
        )
        iam_prefix = f"arn:aws:iam::{ACCOUNT_ID}"
        call("iam.amazonaws.com", "ListRoles", deny_resource=f"{iam_prefix}:role/")
        call("iam.amazonaws.com", "ListGroups", deny_resource=f"{iam_prefix}:group/")
        call("iam.amazonaws.com", "GetAccountAuthorizationDetails", deny_resource="*")

        call(
            "s3.amazonaws.com",
            "ListBuckets",
            request={"Host": f"s3.{HOME_REGION}.amazonaws.com"},
        )
        call(
            "ec2.amazonaws.com",
            "DescribeRegions",
            request={"regionSet": {}, "allRegions": False},
            deny_resource="*",
        )
        for region in RECON_REGIONS:
            call(
                "ec2.amazonaws.com",
                "DescribeInstances",
                region=region,
                request={"instancesSet": {}, "filterSet": {}},
                deny_resource="*",
            )

        call("lambda.amazonaws.com", "ListFunctions20150331", deny_resource="*")
        call("secretsmanager.amazonaws.com", "ListSecrets", deny_resource="*")
        call(
            "rds.amazonaws.com",
            "DescribeDBInstances",
            deny_resource=f"arn:aws:rds:{HOME_REGION}:{ACCOUNT_ID}:db:*",
        )
        call("ssm.amazonaws.com", "DescribeParameters", deny_resource="*")
        call(
            "iam.amazonaws.com",
            "ListAccessKeys",
            request={"userName": "svc-reporter"},
        )

    def escalate(self, clock, leaked):
        """Append the creation of an admin user with an access key and a password."""
        ip, agent = ATTACKER_IP_SWEDEN, LEAK_AGENT_SWEDEN
        user = self.NEW_USER

        def add(when, event_name, request, response):
            self.gen.add(
                self.SCENARIO,
                "attack",
                when,
                leaked,
                "iam.amazonaws.com",
                event_name,
                source_ip=ip,
                user_agent=agent,
                request=request,
                response=response,
            )

        created = clock.tick()
        add(
            created,
            "CreateUser",
            {"userName": user},
            {
                "user": {
                    "path": "/",
                    "userName": user,
                    "userId": self.new_user_id,
                    "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/{user}",
                    "createDate": format_iam_date(created),
                }
            },
        )
        self.call(
            clock,
            leaked,
            ip,
            agent,
            "iam.amazonaws.com",
            "AttachUserPolicy",
            request={
                "userName": user,
                "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess",
            },
        )
        key_created = clock.tick()
        add(
            key_created,
            "CreateAccessKey",
            {"userName": user},
            {
                "accessKey": {
                    "userName": user,
                    "accessKeyId": self.new_access_key,
                    "status": "Active",
                    "createDate": format_iam_date(key_created),
                }
            },
        )
        profile_created = clock.tick()
        add(
            profile_created,
            "CreateLoginProfile",
            {"userName": user, "passwordResetRequired": False},
            {
                "loginProfile": {
                    "userName": user,
                    "createDate": format_iam_date(profile_created),
                    "passwordResetRequired": False,
                }
            },
        )

    def check_from_us(self, clock, leaked):
        ip, agent = ATTACKER_IP_US, LEAK_AGENT_US
        self.call(clock, leaked, ip, agent, "sts.amazonaws.com", "GetCallerIdentity")
        self.call(
            clock,
            leaked,
            ip,
            agent,
            "iam.amazonaws.com",
            "ListAccessKeys",
            request={"userName": self.NEW_USER},
        )
        self.call(
            clock,
            leaked,
            ip,
            agent,
            "s3.amazonaws.com",
            "ListBuckets",
            request={"Host": f"s3.{HOME_REGION}.amazonaws.com"},
        )

    def collect_secrets(self, clock, admin):
        ip, agent = ATTACKER_IP_US, LEAK_AGENT_US

        def call(event_source, event_name, **options):
            self.call(clock, admin, ip, agent, event_source, event_name, **options)

        call("sts.amazonaws.com", "GetCallerIdentity")
        call("secretsmanager.amazonaws.com", "ListSecrets")
        next_token = base64.b64encode(self.rng.randbytes(24)).decode()
        call(
            "secretsmanager.amazonaws.com",
            "ListSecrets",
            request={"nextToken": next_token},
        )
        for secret_id in LEAKED_SECRET_IDS:
            call(
                "secretsmanager.amazonaws.com",
                "GetSecretValue",
                request={"secretId": secret_id},
                low=0.3,
                high=1.5,
            )
        call("ssm.amazonaws.com", "DescribeParameters")
        for names in LEAKED_PARAMETER_NAMES:
            call(
                "ssm.amazonaws.com",
                "GetParameters",
                request={"names": names, "withDecryption": True},
                low=0.3,
                high=1.5,
            )

    def exfiltrate(self, clock, admin):
        """Append the sharing of EBS snapshots with an outside account."""
        ip, agent = ATTACKER_IP_US, LEAK_AGENT_US

        def call(event_name, **options):
            self.call(
                clock, admin, ip, agent, "ec2.amazonaws.com", event_name, **options
            )

        for region in RECON_REGIONS[:3]:
            call(
                "DescribeInstances",
                region=region,
                request={"instancesSet": {}, "filterSet": {}},
            )
        call(
            "DescribeSnapshots",
            request={
                "snapshotSet": {},
                "ownersSet": {"items": [{"owner": "self"}]},
                "sharedUsersSet": {},
                "filterSet": {},
            },
        )
        for _ in range(3):
            request_id = self.gen.random_uuid()
            permission = {"add": {"items": [{"userId": EXFILTRATION_ACCOUNT_ID}]}}
            call(
                "ModifySnapshotAttribute",
                request={
                    "snapshotId": f"snap-0{self.gen.random_hex(16)}",
                    "createVolumePermission": permission,
                    "attributeType": "CREATE_VOLUME_PERMISSION",
                },
                response={"requestId": request_id, "_return": True},
                request_id=request_id,
            )

    def tamper_with_logs(self, clock, admin):
        """Append the disabling of GuardDuty and of the account's own trail.

        The records come from an organization trail, which the member account
        cannot change, so logging goes on after these calls.
        """
        ip, agent = ATTACKER_IP_US, LEAK_AGENT_US

        def call(event_source, event_name, **options):
            self.call(clock, admin, ip, agent, event_source, event_name, **options)

        call("guardduty.amazonaws.com", "ListDetectors")
        call(
            "guardduty.amazonaws.com",
            "DeleteDetector",
            request={"detectorId": self.gen.random_hex(32)},
        )
        call("cloudtrail.amazonaws.com", "DescribeTrails")
        trail_arn = (
            f"arn:aws:cloudtrail:{HOME_REGION}:{ACCOUNT_ID}:trail/acct-audit-trail"
        )
        call("cloudtrail.amazonaws.com", "StopLogging", request={"name": trail_arn})
        call("cloudtrail.amazonaws.com", "DeleteTrail", request={"name": trail_arn})

    def console_visit(self, when):
        """Append a console sign-in of the new user from Sweden and 3 console calls."""
        user_arn = f"arn:aws:iam::{ACCOUNT_ID}:user/{self.NEW_USER}"
        signin_identity = {
            "type": "IAMUser",
            "principalId": self.new_user_id,
            "arn": user_arn,
            "accountId": ACCOUNT_ID,
            "userName": self.NEW_USER,
        }
        self.gen.add(
            self.SCENARIO,
            "attack",
            when,
            signin_identity,
            "signin.amazonaws.com",
            "ConsoleLogin",
            source_ip=ATTACKER_IP_SWEDEN,
            user_agent=BROWSER_AGENT,
            read_only=False,
            event_type="AwsConsoleSignIn",
            response={"ConsoleLogin": "Success"},
            additional={
                "LoginTo": "https://console.aws.amazon.com/console/home",
                "MobileVersion": "No",
                "MFAUsed": "No",
            },
        )
        console_key = self.gen.access_key_id("ASIA")
        console_identity = dict(
            self.gen.iam_user(self.NEW_USER, self.new_user_id, console_key),
            sessionContext={
                "attributes": {
                    "creationDate": format_time(when),
                    "mfaAuthenticated": "false",
                }
            },
        )
        clock = Clock(self.rng, when + timedelta(seconds=20))
        console_calls = [
            ("iam.amazonaws.com", "ListUsers", {"maxItems": 1000}),
            (
                "s3.amazonaws.com",
                "ListBuckets",
                {"Host": f"s3.{HOME_REGION}.amazonaws.com"},
            ),
            (
                "secretsmanager.amazonaws.com",
                "ListSecrets",
                {"maxResults": 25, "sortOrder": "desc"},
            ),
        ]
        for event_source, event_name, request in console_calls:
            self.call(
                clock,
                console_identity,
                ATTACKER_IP_SWEDEN,
                BROWSER_AGENT,
                event_source,
                event_name,
                request=request,
                console_session=True,
                low=5,
                high=40,
            )


# Scenario 4: a stolen deployer session.


class SessionTheft:
    """Attack with the credentials of the nightly deployer session of day 12."""

    SCENARIO = "deployer-session-theft"

    def __init__(self, generator, deployer):
        self.gen = generator
        self.rng = generator.rng
        self.deployer = deployer

    def add(self, when, identity, event_source, event_name, **options):
        return self.gen.add(
            self.SCENARIO,
            "attack",
            when,
            identity,
            event_source,
            event_name,
            source_ip=ATTACKER_IP_SESSION_THEFT,
            user_agent=THEFT_AGENT,
            **options,
        )

    def generate(self):
        identity = self.deployer.stolen_session
        if identity is None:
            raise RuntimeError(
                "internal error: the deployer made no nightly run "
                "on the session-theft day"
            )
        start = START + timedelta(
            days=SESSION_THEFT_DAY, hours=3, minutes=2, seconds=17
        )
        clock = Clock(self.rng, start)

        def call(event_source, event_name, low=0.5, high=6.0, **options):
            when = clock.tick(low, high)
            return self.add(when, identity, event_source, event_name, **options)

        role = Deployer.ROLE
        policy_arn = f"arn:aws:iam::{ACCOUNT_ID}:policy/deployer-permissions"
        allow_all = json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        )

        call("sts.amazonaws.com", "GetCallerIdentity")
        call("iam.amazonaws.com", "GetRole", request={"roleName": role})
        call("iam.amazonaws.com", "ListRolePolicies", request={"roleName": role})
        call(
            "iam.amazonaws.com",
            "ListAttachedRolePolicies",
            request={"roleName": role},
        )
        call(
            "iam.amazonaws.com",
            "PutRolePolicy",
            request={
                "roleName": role,
                "policyName": "ci-cache-access",
                "policyDocument": allow_all,
            },
        )
        call(
            "iam.amazonaws.com",
            "ListPolicyVersions",
            request={"policyArn": policy_arn},
        )
        version_created = clock.tick()
        self.add(
            version_created,
            identity,
            "iam.amazonaws.com",
            "CreatePolicyVersion",
            request={
                "policyArn": policy_arn,
                "policyDocument": allow_all,
                "setAsDefault": True,
            },
            response={
                "policyVersion": {
                    "versionId": "v5",
                    "isDefaultVersion": True,
                    "createDate": format_iam_date(version_created),
                }
            },
        )

        self.replace_function_code(clock, identity)
        self.download_bucket(clock, identity)

    def replace_function_code(self, clock, identity):
        """Append new code for a Lambda function that the role never touched before."""
        function = "billing-export"
        function_arn = f"arn:aws:lambda:{HOME_REGION}:{ACCOUNT_ID}:function:{function}"
        self.add(
            clock.tick(0.5, 6.0),
            identity,
            "lambda.amazonaws.com",
            "GetFunction20150331v2",
            request={"functionName": function},
        )
        updated = clock.tick(8, 20)
        self.add(
            updated,
            identity,
            "lambda.amazonaws.com",
            "UpdateFunctionCode20150331v2",
            request={"functionName": function, "publish": True, "dryRun": False},
            response={
                "functionName": function,
                "functionArn": function_arn,
                "runtime": "python3.12",
                "role": f"arn:aws:iam::{ACCOUNT_ID}:role/billing-export-lambda",
                "handler": "app.handler",
                "codeSize": 48_213,
                "timeout": 60,
                "memorySize": 256,
                "lastModified": updated.strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
                "codeSha256": base64.b64encode(self.rng.randbytes(32)).decode(),
                "version": "7",
                "state": "Active",
                "lastUpdateStatus": "InProgress",
                "packageType": "Zip",
                "architectures": ["x86_64"],
                "revisionId": self.gen.random_uuid(),
            },
        )

    def download_bucket(self, clock, identity):
        """Append the bulk download of a bucket that the role never read before."""
        self.add(
            clock.tick(0.5, 6.0),
            identity,
            "s3.amazonaws.com",
            "ListBuckets",
            request={"Host": f"s3.{HOME_REGION}.amazonaws.com"},
        )
        for month in ("2024/01/", "2024/02/", "2024/03/"):
            clock.tick()
            self.gen.s3_list_objects(
                self.SCENARIO,
                "attack",
                clock.now,
                identity,
                FINANCE_BUCKET,
                f"ledger/{month}",
                source_ip=ATTACKER_IP_SESSION_THEFT,
                user_agent=THEFT_AGENT,
            )
        # 500 objects in about four minutes, a parallel bulk download.
        for index in range(500):
            month = ("2024/01", "2024/02", "2024/03")[index // 170]
            key = f"ledger/{month}/ledger-{index:04d}.csv.gz"
            clock.tick(0.05, 0.9)
            self.gen.s3_object(
                self.SCENARIO,
                "attack",
                clock.now,
                identity,
                "GetObject",
                FINANCE_BUCKET,
                key,
                source_ip=ATTACKER_IP_SESSION_THEFT,
                user_agent=THEFT_AGENT,
                size=self.rng.randint(40_000, 2_500_000),
            )


# Output.


def delivery_file_key(generator, scenario, when, region):
    """Return the scenario, region and hour of an event's file, and its delivery time.

    CloudTrail delivers an event some minutes after it happens, so an event
    from the end of an hour can land in the next hour's file.
    """
    delivered = when + timedelta(seconds=generator.rng.uniform(30, 600))
    hour = delivered.replace(minute=0, second=0, microsecond=0)
    return scenario, region, hour, delivered


def write_cloudtrail_file(generator, path_stem, records):
    """Write one CloudTrail file and return its path."""
    body = json.dumps(
        {"Records": records}, ensure_ascii=False, separators=(",", ":")
    ).encode()
    # AWS gzips every file. A few small ones stay plain here so that readers
    # meet both forms without the output growing much.
    if len(records) <= 12 and generator.rng.random() < 0.3:
        path = path_stem.with_name(path_stem.name + ".json")
        path.write_bytes(body)
        return path
    path = path_stem.with_name(path_stem.name + ".json.gz")
    with open(path, "wb") as raw:
        # mtime=0 and no file name keep the output byte-identical across runs.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed:
            compressed.write(body)
    return path


def write_files(generator, outdir):
    """Write the CloudTrail files and labels.csv, and return per-scenario statistics."""
    files = collections.defaultdict(list)
    last_delivery = {}
    for scenario, label, when, record in generator.events:
        scenario, region, hour, delivered = delivery_file_key(
            generator, scenario, when, record["awsRegion"]
        )
        key = (scenario, region, hour)
        # Records in a file are roughly, not strictly, in time order.
        order = when + timedelta(seconds=generator.rng.uniform(0, 90))
        files[key].append((order, record))
        last_delivery[key] = max(last_delivery.get(key, delivered), delivered)

    stats = {scenario: collections.Counter() for scenario in SCENARIOS}
    for key in sorted(files):
        scenario, region, hour = key
        records = [record for _, record in sorted(files[key], key=lambda item: item[0])]
        folder = outdir.joinpath(
            scenario,
            "AWSLogs",
            ACCOUNT_ID,
            "CloudTrail",
            region,
            f"{hour:%Y}",
            f"{hour:%m}",
            f"{hour:%d}",
        )
        folder.mkdir(parents=True, exist_ok=True)
        stamp = min(last_delivery[key], hour + timedelta(minutes=59))
        suffix = generator.random_text(ALPHANUMERIC, 16)
        name = f"{ACCOUNT_ID}_CloudTrail_{region}_{stamp:%Y%m%dT%H%M}Z_{suffix}"
        path = write_cloudtrail_file(generator, folder / name, records)
        if path.name.endswith(".gz"):
            stats[scenario]["gzip files"] += 1
        else:
            stats[scenario]["plain files"] += 1
        stats[scenario]["bytes"] += path.stat().st_size

    by_time = sorted(
        generator.events, key=lambda event: (event[2], event[3]["eventID"])
    )
    with open(outdir / "labels.csv", "w", newline="") as labels_file:
        writer = csv.writer(labels_file, lineterminator="\n")
        writer.writerow(["event_id", "label"])
        for scenario, label, _, record in by_time:
            writer.writerow([record["eventID"], label])
            stats[scenario][label] += 1
    return stats


def print_summary(stats, outdir):
    header = ["scenario", "events", "attack", "normal", "gzip", "plain", "bytes"]
    row_format = "{:<24} {:>7} {:>7} {:>7} {:>5} {:>5} {:>10}"
    print(row_format.format(*header))
    totals = collections.Counter()
    for scenario in SCENARIOS + ["total"]:
        counts = totals if scenario == "total" else stats[scenario]
        events = counts["attack"] + counts["normal"]
        print(
            row_format.format(
                scenario,
                events,
                counts["attack"],
                counts["normal"],
                counts["gzip files"],
                counts["plain files"],
                counts["bytes"],
            )
        )
        if scenario != "total":
            totals.update(counts)
    print(f"labels.csv: {(outdir / 'labels.csv').stat().st_size} bytes")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "outdir", type=Path, help="directory to write the scenarios and labels.csv into"
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help=(
            "delete the scenario folders and labels.csv of an earlier run "
            "in OUTDIR first"
        ),
    )
    args = parser.parse_args()

    names = SCENARIOS + ["labels.csv"]
    previous = [args.outdir / name for name in names if (args.outdir / name).exists()]
    if previous and not args.replace:
        sys.exit(
            f"error: {args.outdir} already contains output of an earlier run "
            f"({previous[0].name}); pass --replace to overwrite it"
        )
    for path in previous:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    args.outdir.mkdir(parents=True, exist_ok=True)

    generator = Generator(SEED)
    deployer = Deployer(generator)
    reporter = Reporter(generator)
    deployer.generate()
    reporter.generate()
    KeyLeak(generator, reporter).generate()
    SessionTheft(generator, deployer).generate()
    print_summary(write_files(generator, args.outdir), args.outdir)


if __name__ == "__main__":
    main()
