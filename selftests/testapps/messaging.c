// SPDX-License-Identifier: MIT
/*
 * messaging: the dangling pointer of the Dangless thesis (section 1.3), as a
 * tiny message service.
 *
 * Bob sends Alice a message.  Alice reads it and the service deletes it -
 * but the inbox keeps its "latest message" preview pointing at the deleted
 * message.  Cecile then logs in; her session record is the same size as a
 * message, so an ordinary malloc gives her the memory the message was in.
 * When Alice's inbox shows the preview, it reads Cecile's session through
 * the dangling pointer, and prints Cecile's PIN on Alice's screen.
 *
 * Under Dangless the deleted message's address is revoked at free(): the
 * preview read faults at once, with a report saying what was freed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct message { /* 64 bytes */
	char from[16];
	char text[48];
};

struct session { /* 64 bytes as well: a freed message fits it exactly */
	char user[16];
	char secret[48];
};

struct inbox {
	const char *owner;
	struct message *latest; /* the preview: never cleared - the bug */
};

static void say(const char *who, const char *what)
{
	printf("  %-8s %s\n", who, what);
	fflush(stdout);
}

int main(void)
{
	struct inbox alice = {"alice", NULL};
	printf("A tiny message service, with one bug: deleting a message "
	       "leaves the inbox preview pointing at it.\n\n");

	struct message *m = malloc(sizeof(*m));
	if (!m)
		return 1;
	strcpy(m->from, "bob");
	strcpy(m->text, "Lunch at noon?");
	alice.latest = m;
	say("[bob]", "sends Alice \"Lunch at noon?\"");

	say("[alice]", "reads it; the service deletes the message (free)");
	free(m); /* ... but alice.latest still points at it */

	struct session *s = malloc(sizeof(*s));
	if (!s)
		return 1;
	strcpy(s->user, "cecile");
	strcpy(s->secret, "PIN 4711");
	say("[cecile]", "logs in; the service keeps her session, PIN 4711");

	say("[alice]", "refreshes her inbox; the preview shows:");
	/* the dangling read: under Dangless the program stops here */
	printf("           latest message from \"%s\": \"%s\"\n",
	       alice.latest->from, alice.latest->text);

	if (strstr(alice.latest->text, s->secret))
		printf("\n!! Alice's screen shows Cecile's PIN: the deleted "
		       "message's memory\n!! was reused for Cecile's session, "
		       "and the dangling preview read it.\n");
	else
		printf("\n(the preview shows stale data, but no PIN)\n");
	free(s);
	return 0;
}
