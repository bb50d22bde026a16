"""The verification-email feature: a sign-up asks for an email that verifies the address."""
