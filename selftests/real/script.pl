# An allocation-heavy Perl script; deterministic output (sorted keys).
use strict;
use warnings;

my %words;
my $seed = 42;
sub rnd { $seed = ($seed * 1103515245 + 12345) % 2147483648; return $seed; }

for my $i (1 .. 50000) {
    my $w = join '', map { chr(97 + rnd() % 26) } 1 .. (3 + rnd() % 5);
    $words{$w}++;
}
my @top = (sort { $words{$b} <=> $words{$a} || $a cmp $b } keys %words)[0 .. 9];
print "distinct: ", scalar(keys %words), "\n";
print "top: @top\n";

my @lines = map { "line $_: " . ('x' x ($_ % 80)) } 1 .. 20000;
my $text = join "\n", @lines;
(my $copy = $text) =~ s/x{10}/<ten>/g;
my $count = () = $copy =~ /<ten>/g;
print "length: ", length($text), " tens: $count\n";

my @sorted = sort { $a <=> $b } map { rnd() % 100000 } 1 .. 30000;
print "sorted: $sorted[0] $sorted[15000] $sorted[-1]\n";

my %deep;
$deep{$_ % 100}{$_ % 7}[$_ % 3] .= "$_," for 1 .. 20000;
my $n = 0;
$n += length($deep{$_}{3}[1] // '') for keys %deep;
print "deep: $n\n";
