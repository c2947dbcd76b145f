# Perl hash churn: a hash of a few hundred thousand string keys with array
# values, entries replaced and deleted at random, strings rebuilt each time.
use strict;
use warnings;

my $scale = @ARGV ? $ARGV[0] : 1.0;
my $n = int(100000 * $scale);
$n = 1000 if $n < 1000;
my %h;
my $seed = 12345;
sub rnd { $seed = ($seed * 1103515245 + 12345) % 2147483648; return $seed % $_[0]; }
for my $i (1 .. $n) {
    $h{"key$i"} = [ $i, "value" x (1 + $i % 5), { a => $i } ];
}
for my $k (1 .. 2 * $n) {
    my $i = 1 + rnd($n);
    if ($k % 3 == 0) {
        delete $h{"key$i"};
    } else {
        $h{"key$i"} = [ $k, join(",", map { $_ * $k } 1 .. 1 + $k % 8) ];
    }
}
my $sum = 0;
$sum += $h{$_}[0] for keys %h;
print scalar(keys %h), " $sum\n";
