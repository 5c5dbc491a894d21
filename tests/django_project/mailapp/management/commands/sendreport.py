from django.core import mail
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Send the daily report over one connection (a management command)."

    def add_arguments(self, parser):
        parser.add_argument("count", type=int)

    def handle(self, count, **options):
        messages = [
            mail.EmailMessage(
                f"Report {n}", f"Line {n}\n", None, [f"user{n}@example.com"]
            )
            for n in range(count)
        ]
        connection = mail.get_connection()
        with connection:
            sent = connection.send_messages(messages)
        self.stdout.write(f"sent {sent}")
