"""Amazon Bedrock model customization: compute.backend bedrock.

The light modules (families, request) hold what validate and plan need and import
neither boto3 nor torch; the runtime modules import boto3 inside their functions only.
"""
